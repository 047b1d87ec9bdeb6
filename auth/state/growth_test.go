package state

// How a Memory's cost grows with the records it holds: time and heap per
// record at 10k, 100k and 1M records, which stay flat if it is linear.
//
//	go test -run '^$' -bench Records -benchmem ./auth/state

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// growthNet is the i-th network, a /24 of its own.
func growthNet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 0}), 24)
}

func BenchmarkRecords(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		add  func(m *Memory, i int)
	}{
		{"owner", func(m *Memory, i int) { m.Success(ctx, fmt.Sprintf("user%07d@example.org", i), growthNet(i)) }},
		{"failure", func(m *Memory, i int) {
			user := fmt.Sprintf("user%07d@example.org", i)
			m.Failure(ctx, Attempt{User: user, Network: growthNet(i), Fingerprint: m.Fingerprint(user, "wrong")})
		}},
		// The baseline: a bare Go map with the same keys, one insert each.
		{"bare map", nil},
	} {
		for _, n := range []int{10_000, 100_000, 1_000_000} {
			b.Run(fmt.Sprintf("%s/records=%d", bc.name, n), func(b *testing.B) {
				l := DefaultLimits
				l.MaxTracked = n
				var live uint64
				for b.Loop() {
					b.StopTimer()
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					m := NewMemory(l)
					bare := map[recordKey]int32{}
					b.StartTimer()
					for i := range n {
						if bc.add == nil {
							k := recordKey{fmt.Sprintf("user%07d@example.org", i), growthNet(i)}
							if _, ok := bare[k]; !ok {
								bare[k] = int32(i)
							}
							continue
						}
						bc.add(m, i)
					}
					b.StopTimer()
					runtime.GC()
					runtime.ReadMemStats(&after)
					live = after.HeapAlloc - before.HeapAlloc
					runtime.KeepAlive(m)
					runtime.KeepAlive(bare)
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/record")
				b.ReportMetric(float64(live)/float64(n), "live-B/record")
			})
		}
	}
}
