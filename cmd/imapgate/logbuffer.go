package main

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"
)

// logFlushInterval is the longest a log line waits in the buffer.
const logFlushInterval = 100 * time.Millisecond

// logBuffer batches log lines into few writes. imapgate logs a line for
// every login, and at thousands of logins a second one write(2) per line
// is a good share of a request's cost. A line waits at most
// logFlushInterval (fail2ban and log shippers do not notice), and
// everything is flushed when imapgate stops.
type logBuffer struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func newLogBuffer(w io.Writer) *logBuffer {
	return &logBuffer{w: bufio.NewWriterSize(w, 64<<10)}
}

// Write buffers p; a full buffer is written at once.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes what is buffered.
func (b *logBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// flushEvery flushes every logFlushInterval until ctx ends, then once more.
func (b *logBuffer) flushEvery(ctx context.Context) {
	t := time.NewTicker(logFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.Flush()
		case <-ctx.Done():
			b.Flush()
			return
		}
	}
}
