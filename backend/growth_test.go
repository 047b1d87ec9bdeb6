package backend

// How the users file's cost grows with its length: time and memory per
// line at 10k, 100k and 1M lines, which stay flat if parsing is linear.
//
//	go test -run '^$' -bench ParseUsers -benchmem ./backend

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// usersFileOf returns a users file of n lines, every other one naming its
// backend, as the growth bench writes it.
func usersFileOf(n int) []byte {
	var sb strings.Builder
	sb.Grow(n * 32)
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&sb, "filler%07d@example.org mailhost01\n", i)
		} else {
			fmt.Fprintf(&sb, "filler%07d@example.org\n", i)
		}
	}
	return []byte(sb.String())
}

func BenchmarkParseUsers(b *testing.B) {
	backends, err := ParseBackends("mailhost01=192.0.2.22;mailhost02=192.0.2.33", Ports{}, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		data := usersFileOf(n)
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			var live uint64
			for b.Loop() {
				var before, after runtime.MemStats
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&before)
				b.StartTimer()
				table, err := parseUsers(data, backends, backends["mailhost02"])
				if err != nil || table.len() != n {
					b.Fatalf("%v", err)
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				live = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(table)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/line")
			b.ReportMetric(float64(live)/float64(n), "live-B/line")
		})
	}
}

// TestAppendFoldedASCII holds the ASCII short cut of appendFolded to
// foldRune, rune by rune.
func TestAppendFoldedASCII(t *testing.T) {
	for r := rune(0); r < 128; r++ {
		if got, want := string(appendFolded(nil, string(r))), string(foldRune(r)); got != want {
			t.Errorf("appendFolded(%q) = %q, foldRune gives %q", r, got, want)
		}
	}
	if got := string(appendFolded(nil, []byte("Émile\xffK"))); got != string(appendFolded(nil, "émile\xff\u212a")) {
		t.Errorf("Émile\\xffK folds to %q, not as émile\\xff and the Kelvin sign", got)
	}
}
