package auth

// How the verified-login cache's cost grows with its entries: time and
// heap per entry at 10k, 100k and 1M, which stay flat if it is linear.
//
//	go test -run '^$' -bench CacheEntries -benchmem ./auth

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/state"
)

func BenchmarkCacheEntries(b *testing.B) {
	fp := state.NewDigester(nil)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		users := make([]string, n)
		for i := range users {
			users[i] = fmt.Sprintf("user%07d@example.org", i)
		}
		sum := fp.Sum("right")
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			var live uint64
			for b.Loop() {
				b.StopTimer()
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c := newLoginCache(time.Hour, n+1)
				b.StartTimer()
				for _, u := range users {
					c.store(cacheKey{"mailhost01", "imap", u}, sum)
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				// The users' names are the test's own, kept apart: only
				// what the cache adds is counted.
				live = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(c)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			b.ReportMetric(float64(live)/float64(n), "live-B/entry")
		})
	}
}
