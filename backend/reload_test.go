package backend

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// usersList returns a users file listing n users, all on mailhost01.
func usersList(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "user%05d mailhost01\n", i)
	}
	return b.String()
}

// A file that shrinks to a fraction of the table is installed only when
// a second look finds it the same; one that lists nobody is refused. Both
// say so in the log.
func TestReloadGuardsShrinking(t *testing.T) {
	path := writeFile(t, "users", usersList(100))
	logger, logs := captureLogger()
	uf, err := OpenUsersFile(path, testBackends(t), nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	uf.Settle = 10 * time.Millisecond
	ctx := context.Background()

	replaceFile(t, path, "")
	if err := uf.Reload(ctx); err == nil || !strings.Contains(err.Error(), "lists no users, where 100 are loaded") {
		t.Errorf("Reload of an emptied file = %v, want it refused", err)
	}
	if uf.Len() != 100 {
		t.Errorf("%d users after an emptied file, want the last good 100", uf.Len())
	}

	replaceFile(t, path, usersList(10))
	if err := uf.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if uf.Len() != 10 {
		t.Errorf("%d users, want the 10 of the file that held still", uf.Len())
	}
	l := logs.String()
	if !strings.Contains(l, "users file shrank; taking a second look") || !strings.Contains(l, "after=\"a second look\"") {
		t.Errorf("log does not tell of the second look:\n%s", l)
	}

	replaceFile(t, path, usersList(9)) // nine in ten: at once
	if err := uf.Reload(ctx); err != nil || uf.Len() != 9 {
		t.Errorf("Reload = %v with %d users, want 9", err, uf.Len())
	}
}

// A file rewritten in place while SIGHUPs arrive back to back never
// installs a half-written table: every table seen is the old one or the
// new one, whole.
func TestReloadDuringInPlaceRewrite(t *testing.T) {
	const before, after = 2000, 2001
	path := writeFile(t, "users", usersList(before))
	uf, err := OpenUsersFile(path, testBackends(t), nil, quietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	uf.Settle = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The storm: a reload as soon as the last one is done.
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]bool{}
	wg.Go(func() {
		for ctx.Err() == nil {
			uf.Reload(ctx)
			mu.Lock()
			seen[uf.Len()] = true
			mu.Unlock()
		}
	})
	// The rewrite: truncate, then the new content a little at a time,
	// with pauses shorter than Settle.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	content := usersList(after)
	for i := 0; i < len(content); i += 4096 {
		f.WriteString(content[i:min(i+4096, len(content))])
		time.Sleep(5 * time.Millisecond)
	}
	f.Close()
	waitFor(t, "the new table", func() bool { return uf.Len() == after })
	cancel()
	wg.Wait()
	for n := range seen {
		if n != before && n != after {
			t.Errorf("a table of %d users was installed, want only %d or %d", n, before, after)
		}
	}
}

// A file that never holds still is not read, and the reload says why.
func TestReloadGivesUpOnAFileThatKeepsChanging(t *testing.T) {
	path := writeFile(t, "users", usersList(10))
	uf, err := OpenUsersFile(path, testBackends(t), nil, quietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	uf.Settle = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		// The same first line again and again: the content stays, the
		// modification time moves on.
		first := []byte(usersList(1))
		for ctx.Err() == nil {
			f.WriteAt(first, 0)
			time.Sleep(100 * time.Microsecond)
		}
	})
	err = uf.Reload(context.Background())
	cancel()
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), "kept changing") {
		t.Errorf("Reload = %v, want it to give up on a file that kept changing", err)
	}
}
