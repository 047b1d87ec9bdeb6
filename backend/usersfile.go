package backend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on a users file. They are far above any real file and exist so
// that a wrong path (a log file, /dev/zero) fails fast instead of eating
// memory.
const (
	// MaxUsersFileSize is the largest users file accepted, in bytes.
	MaxUsersFileSize = 64 << 20
	// MaxUsersFileLine is the longest line accepted, in bytes.
	MaxUsersFileLine = 64 << 10
)

// ParseError is a mistake in a users file, with its place.
type ParseError struct {
	// File is the file's path, empty when parsing from memory.
	File string
	// Line is the 1-based line number, 0 for the file as a whole.
	Line int
	// Reason says what is wrong.
	Reason string
}

// Error returns "users file PATH line N: REASON".
func (e *ParseError) Error() string {
	var sb strings.Builder
	sb.WriteString("users file")
	if e.File != "" {
		sb.WriteString(" " + e.File)
	}
	if e.Line > 0 {
		fmt.Fprintf(&sb, " line %d", e.Line)
	}
	sb.WriteString(": " + e.Reason)
	return sb.String()
}

// UsersFile is a Selector backed by a file of users
// (IMAPGATE_USERS_FILE), the Cyrus howto's rule made explicit. Each line
// is "user" or "user backend", fields separated by spaces or tabs; '#'
// starts a comment, whole-line or trailing, so user names cannot contain
// '#'; blank lines are ignored. A line without a backend gets the
// configured default for such lines (IMAPGATE_USERS_FILE_BACKEND). User
// names are compared case-insensitively.
//
// Select is lock-free: each load builds a new immutable table and swaps
// it in atomically, so lookups never wait for a reload.
type UsersFile struct {
	path        string
	backends    map[string]*Backend
	lineDefault *Backend
	logger      *slog.Logger

	table atomic.Pointer[map[string]*Backend]

	// mu serialises reloads (SIGHUP and Watch may race) and guards loaded.
	mu sync.Mutex
	// loaded identifies the file version last read, good or bad, so that
	// Watch neither reloads nor re-logs an unchanged file.
	loaded fileStamp
}

// OpenUsersFile loads the users file at path. backends are the names a
// line may give; lineDefault, which may be nil, is the backend of lines
// that name none (when nil such lines are errors). A nil logger means
// slog.Default(). The initial load must succeed: a service that starts
// with a broken file would send users to the wrong backend.
func OpenUsersFile(path string, backends map[string]*Backend, lineDefault *Backend, logger *slog.Logger) (*UsersFile, error) {
	if logger == nil {
		logger = slog.Default()
	}
	u := &UsersFile{
		path:        path,
		backends:    backends,
		lineDefault: lineDefault,
		logger:      logger.With("file", path),
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.load(); err != nil {
		return nil, err
	}
	return u, nil
}

// Select returns the backend the file gives user, nil for a user it does
// not list.
func (u *UsersFile) Select(_ context.Context, user string) (*Backend, error) {
	if user == "" {
		return nil, nil
	}
	return (*u.table.Load())[foldUser(user)], nil
}

// Len returns the number of users in the current table.
func (u *UsersFile) Len() int {
	return len(*u.table.Load())
}

// Reload rereads the file now (on SIGHUP). When the file cannot be read or
// parsed, the last good table stays in use and the error is logged and
// returned.
func (u *UsersFile) Reload() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	err := u.load()
	if err != nil {
		u.logFailure(err)
	}
	return err
}

// logFailure logs a failed reload, with the line when there is one.
func (u *UsersFile) logFailure(err error) {
	attrs := []any{"err", err, "users", u.Len()}
	var pe *ParseError
	if errors.As(err, &pe) && pe.Line > 0 {
		attrs = append(attrs, "line", pe.Line)
	}
	u.logger.Warn("users file not reloaded; keeping the last good table", attrs...)
}

// load reads and parses the file and, when it is good, installs the new
// table. u.mu must be held.
func (u *UsersFile) load() error {
	f, err := os.Open(u.path)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	// Stamp what was opened, not what the path names later: if the file is
	// replaced while being read, Watch sees the difference and reads again.
	u.loaded = stampOf(fi)
	if !fi.Mode().IsRegular() {
		return &ParseError{File: u.path, Reason: "not a regular file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxUsersFileSize+1))
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if len(data) > MaxUsersFileSize {
		return &ParseError{File: u.path, Reason: fmt.Sprintf("larger than %d bytes", MaxUsersFileSize)}
	}
	table, err := parseUsers(data, u.backends, u.lineDefault)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.File = u.path
		}
		return err
	}
	u.table.Store(&table)
	u.logger.Info("users file loaded", "users", len(table))
	return nil
}

// parseUsers parses the contents of a users file into a table keyed by
// foldUser.
func parseUsers(data []byte, backends map[string]*Backend, lineDefault *Backend) (map[string]*Backend, error) {
	table := make(map[string]*Backend)
	firstLine := make(map[string]int)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxUsersFileLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.FieldsFunc(line, func(r rune) bool {
			// '\r' so that files written on Windows parse too.
			return r == ' ' || r == '\t' || r == '\r'
		})
		var b *Backend
		switch len(fields) {
		case 0:
			continue
		case 1:
			if lineDefault == nil {
				return nil, &ParseError{Line: n, Reason: fmt.Sprintf("user %q names no backend and no default for such lines is set (IMAPGATE_USERS_FILE_BACKEND)", fields[0])}
			}
			b = lineDefault
		case 2:
			var known bool
			if b, known = backends[fields[1]]; !known {
				return nil, &ParseError{Line: n, Reason: fmt.Sprintf("unknown backend %q for user %q", fields[1], fields[0])}
			}
		default:
			return nil, &ParseError{Line: n, Reason: fmt.Sprintf("%d fields; want \"user\" or \"user backend\"", len(fields))}
		}
		key := foldUser(fields[0])
		if prev, dup := firstLine[key]; dup {
			return nil, &ParseError{Line: n, Reason: fmt.Sprintf("user %q already listed on line %d", fields[0], prev)}
		}
		firstLine[key] = n
		table[key] = b
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: n + 1, Reason: fmt.Sprintf("line longer than %d bytes", MaxUsersFileLine)}
		}
		return nil, &ParseError{Line: n + 1, Reason: err.Error()}
	}
	return table, nil
}

// Watch reloads the file whenever it changes, until ctx is done. It polls
// the file's status every interval rather than using inotify: polling by
// path follows whatever the path names now, so it sees editors' atomic
// renames (a new inode) and Kubernetes ConfigMap updates (a swapped
// ..data symlink) that an inotify watch on the old inode would miss, and
// it needs no platform-specific code.
//
// A change is the modification time, size, inode or device differing
// from the version last read. A change is acted on only once the status
// has held still for one interval, so that a file being rewritten in
// place is not read half-written. A rewrite keeping the size within the
// file system's timestamp granularity can go unseen; Reload (SIGHUP)
// forces a read. A broken or vanished file keeps the last good table and
// is logged once per change.
func (u *UsersFile) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending fileStamp // the changed status seen at the last tick
	missing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(u.path)
		if err != nil {
			if !missing {
				u.logger.Warn("users file unreadable; keeping the last good table", "err", err, "users", u.Len())
				missing = true
			}
			pending = fileStamp{}
			continue
		}
		missing = false
		now := stampOf(fi)
		u.mu.Lock()
		changed := now != u.loaded
		u.mu.Unlock()
		if !changed {
			pending = fileStamp{}
			continue
		}
		if now != pending {
			pending = now
			continue
		}
		pending = fileStamp{}
		_ = u.Reload() // Reload logs its own failure.
	}
}

// fileStamp identifies a version of a file well enough to notice changes.
type fileStamp struct {
	modTime int64 // UnixNano; an integer so that == compares it exactly
	size    int64
	dev     uint64
	ino     uint64
}

// stampOf returns fi's stamp.
func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{modTime: fi.ModTime().UnixNano(), size: fi.Size()}
	s.dev, s.ino = fileID(fi)
	return s
}
