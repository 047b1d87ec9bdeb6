package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The default memory limit. Go's collector lets the heap grow to twice
// what was live at the last collection (GOGC=100), and the goroutines of
// waiting requests count as live: with 1,000 requests waiting for a check
// slot, that headroom alone is some 15 MiB of garbage a burst of checks
// fills before the next collection. A memory limit close above what the
// process needs makes the collector run sooner instead, and hand freed
// memory back to the system. A fixed limit would make a large deployment
// (a users file of a million lines, a flood's limiter records) collect
// without pause once it needs more than the limit, so the limit follows
// what is live: never below memLimitFloor, and with memLimitHeadroom of it
// as room for garbage above that. GOMEMLIMIT, when set, replaces all this.
const (
	memLimitFloor = 20 << 20
	// memLimitHeadroom is the garbage allowed as a share of what is in
	// use (1/4: a collection per quarter of the live memory allocated).
	memLimitHeadroom = 4
	memLimitEvery    = time.Second
)

// memoryInUse names the runtime's memory that is not garbage: the heap
// marked live by the last collection, goroutine stacks and the runtime's
// own structures.
var memoryInUse = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes",
	"/memory/classes/metadata/other:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/other:bytes",
	"/memory/classes/profiling/buckets:bytes",
}

// followMemory keeps the default memory limit until ctx ends, unless the
// operator set GOMEMLIMIT.
func followMemory(ctx context.Context) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	samples := make([]metrics.Sample, len(memoryInUse))
	for i, name := range memoryInUse {
		samples[i].Name = name
	}
	setMemoryLimit(samples)
	t := time.NewTicker(memLimitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			setMemoryLimit(samples)
		}
	}
}

// setMemoryLimit sets the limit from what is in use now, and returns it.
func setMemoryLimit(samples []metrics.Sample) int64 {
	metrics.Read(samples)
	var inUse uint64
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			inUse += s.Value.Uint64()
		}
	}
	limit := max(memLimitFloor, int64(inUse+inUse/memLimitHeadroom))
	debug.SetMemoryLimit(limit)
	return limit
}
