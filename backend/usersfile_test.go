package backend

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeFile writes content to name in a fresh temporary directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceFile replaces path atomically, as editors and config managers do:
// write a temporary file beside it, then rename it over.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for the Watch goroutine to log into.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLogger returns a logger writing text records into a buffer.
func captureLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// quietLogger returns a logger whose records go to the test log, shown
// only under -v or on failure.
func quietLogger(t *testing.T) *slog.Logger {
	l, buf := captureLogger()
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Log(buf.String())
		}
	})
	return l
}

// waitFor polls cond until it holds or a deadline passes. Tests wait for
// the effect they expect, never for a fixed time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestParseUsers(t *testing.T) {
	bs := testBackends(t)
	def := bs["mailhost02"]
	data := "# users on the new server\n" +
		"\n" +
		"alice   mailhost01\n" +
		"\tBob\tmailhost03  # moved in May\n" +
		"carol\r\n" +
		"   dave # no backend: the line default\n" +
		"émile mailhost01\n" +
		"x#y mailhost01\n" // '#' starts a comment even inside a word
	table, err := parseUsers([]byte(data), bs, def)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"alice": "mailhost01", "bob": "mailhost03", "BOB": "mailhost03",
		"carol": "mailhost02", "dave": "mailhost02", "ÉMILE": "mailhost01",
		"x": "mailhost02",
	}
	if table.len() != len(want)-1 { // BOB is bob
		t.Errorf("table has %d users, want %d", table.len(), len(want)-1)
	}
	for user, name := range want {
		b := table.lookup(user)
		if b == nil || b.Name != name {
			t.Errorf("user %q: got %v, want %s", user, b, name)
		}
	}
}

func TestParseUsersErrors(t *testing.T) {
	bs := testBackends(t)
	def := bs["mailhost02"]
	for _, tt := range []struct {
		name     string
		data     string
		def      *Backend
		wantLine int
		want     string
	}{
		{"no default", "alice mailhost01\n\nbob\n", nil, 3, `user "bob" names no backend`},
		{"unknown backend", "# c\nalice mailhost09\n", def, 2, `unknown backend "mailhost09"`},
		{"duplicate", "alice\nbob\nAlice mailhost01\n", def, 3, `user "Alice" already listed on line 1`},
		{"too many fields", "alice mailhost01 extra\n", def, 1, "3 fields"},
		{"long line", "alice\n" + strings.Repeat("x", MaxUsersFileLine+1) + "\n", def, 2, "line longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseUsers([]byte(tt.data), bs, tt.def)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if pe.Line != tt.wantLine {
				t.Errorf("line = %d, want %d (%v)", pe.Line, tt.wantLine, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestOpenUsersFileErrors(t *testing.T) {
	bs := testBackends(t)
	t.Run("missing", func(t *testing.T) {
		_, err := OpenUsersFile(filepath.Join(t.TempDir(), "nope"), bs, nil, quietLogger(t))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want not-exist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := OpenUsersFile(t.TempDir(), bs, nil, quietLogger(t))
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("err = %v, want not a regular file", err)
		}
	})
	t.Run("parse error names file and line", func(t *testing.T) {
		path := writeFile(t, "users", "alice\n")
		_, err := OpenUsersFile(path, bs, nil, quietLogger(t))
		if err == nil || !strings.Contains(err.Error(), path+" line 1:") {
			t.Errorf("err = %v, want it to name %s line 1", err, path)
		}
	})
}

func TestUsersFileReloadKeepsLastGood(t *testing.T) {
	bs := testBackends(t)
	path := writeFile(t, "users", "alice mailhost01\n")
	logger, logs := captureLogger()
	uf, err := OpenUsersFile(path, bs, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	uf.Settle = 10 * time.Millisecond
	replaceFile(t, path, "alice mailhost03\nbob\n")
	err = uf.Reload(context.Background())
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || pe.File != path {
		t.Fatalf("Reload = %v, want a ParseError for %s line 2", err, path)
	}
	if got := nameOf(uf, "alice"); got != "mailhost01" {
		t.Errorf("after a broken reload alice is on %q, want the last good mailhost01", got)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "file="+path) || !strings.Contains(l, "line=2") {
		t.Errorf("log does not name the file and line at WARN:\n%s", l)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := uf.Reload(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reload of a vanished file = %v, want not-exist", err)
	}
	if got := nameOf(uf, "alice"); got != "mailhost01" {
		t.Errorf("after the file vanished alice is on %q, want mailhost01", got)
	}

	replaceFile(t, path, "alice mailhost03\nbob mailhost02\n")
	if err := uf.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := nameOf(uf, "alice") + "," + nameOf(uf, "bob"); got != "mailhost03,mailhost02" {
		t.Errorf("after a good reload got %s, want mailhost03,mailhost02", got)
	}
	if uf.Len() != 2 {
		t.Errorf("Len = %d, want 2", uf.Len())
	}
}

// startWatch runs Watch until the test ends, and waits for it to return so
// that goleak and the test log see no stray goroutine.
func startWatch(t *testing.T, uf *UsersFile) {
	uf.Settle = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		uf.Watch(ctx, 5*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestUsersFileWatch(t *testing.T) {
	bs := testBackends(t)
	path := writeFile(t, "users", "alice mailhost01\n")
	logger, logs := captureLogger()
	uf, err := OpenUsersFile(path, bs, bs["mailhost02"], logger)
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, uf)

	// An edit in place.
	if err := os.WriteFile(path, []byte("alice mailhost03\nbob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edited file", func() bool { return nameOf(uf, "alice") == "mailhost03" })
	if got := nameOf(uf, "bob"); got != "mailhost02" {
		t.Errorf("bob = %q, want mailhost02", got)
	}

	// An atomic rename, as editors and config managers write.
	replaceFile(t, path, "carol mailhost01\n")
	waitFor(t, "the renamed-in file", func() bool { return nameOf(uf, "carol") == "mailhost01" })
	if got := nameOf(uf, "alice"); got != "" {
		t.Errorf("alice = %q after she left the file, want none", got)
	}

	// A broken file keeps the table and is logged with its line.
	replaceFile(t, path, "carol mailhost01\ndave nowhere\n")
	waitFor(t, "the broken file's warning", func() bool { return strings.Contains(logs.String(), "line=2") })
	if got := nameOf(uf, "carol"); got != "mailhost01" {
		t.Errorf("carol = %q after a broken edit, want mailhost01", got)
	}

	// A vanished file keeps the table and is logged.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vanished file's warning", func() bool { return strings.Contains(logs.String(), "users file unreadable") })
	if got := nameOf(uf, "carol"); got != "mailhost01" {
		t.Errorf("carol = %q after the file vanished, want mailhost01", got)
	}

	// It comes back.
	replaceFile(t, path, "erin mailhost03\n")
	waitFor(t, "the file's return", func() bool { return nameOf(uf, "erin") == "mailhost03" })
}

// TestUsersFileWatchConfigMap follows a Kubernetes ConfigMap volume
// update: the file is a symlink through ..data, and an update swaps the
// ..data symlink to a new directory.
func TestUsersFileWatchConfigMap(t *testing.T) {
	bs := testBackends(t)
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "users"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", "alice mailhost01\n")
	path := filepath.Join(dir, "users")
	if err := os.Symlink(filepath.Join("..data", "users"), path); err != nil {
		t.Fatal(err)
	}
	uf, err := OpenUsersFile(path, bs, nil, quietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, uf)
	version("..v2", "alice mailhost01\n") // same size and maybe time: the inode tells
	version("..v3", "alice mailhost03\n")
	waitFor(t, "the swapped ConfigMap", func() bool { return nameOf(uf, "alice") == "mailhost03" })
}
