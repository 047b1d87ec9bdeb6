package main

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// The default memory limit is never below its floor, and follows what is
// live: with 64 MiB held, it leaves a quarter of that above it rather
// than making the collector run without pause.
func TestMemoryLimitFollowsLiveMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	samples := make([]metrics.Sample, len(memoryInUse))
	for i, name := range memoryInUse {
		samples[i].Name = name
	}
	runtime.GC()
	if got := setMemoryLimit(samples); got < memLimitFloor {
		t.Errorf("limit %d, below the floor %d", got, memLimitFloor)
	}
	held := make([]byte, 64<<20)
	for i := range held {
		held[i] = 1
	}
	runtime.GC()
	got := setMemoryLimit(samples)
	if want := int64(len(held) + len(held)/memLimitHeadroom); got < want {
		t.Errorf("limit %d with 64 MiB live, want at least %d", got, want)
	}
	if cur := debug.SetMemoryLimit(-1); cur != got {
		t.Errorf("the runtime's limit is %d, want %d", cur, got)
	}
	runtime.KeepAlive(held)
}

// GOMEMLIMIT is the operator's: with it set, imapgate leaves the limit
// alone.
func TestMemoryLimitLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	before := debug.SetMemoryLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	followMemory(ctx)
	if after := debug.SetMemoryLimit(-1); after != before {
		t.Errorf("limit changed from %d to %d with GOMEMLIMIT set", before, after)
	}
}
