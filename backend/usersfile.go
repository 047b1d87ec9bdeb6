package backend

import (
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

	table atomic.Pointer[usersTable]

	// Settle is how long the file must hold still before a reload reads
	// it; 0 means DefaultSettle. Set it before Watch or Reload runs.
	Settle time.Duration

	// mu serialises reloads (SIGHUP and Watch share one guard) and
	// guards loaded.
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
	return u.table.Load().lookup(user), nil
}

// Len returns the number of users in the current table.
func (u *UsersFile) Len() int {
	return u.table.Load().len()
}

// DefaultSettle is how long a users file must hold still before it is
// read, when UsersFile.Settle is zero.
const DefaultSettle = time.Second

// maxSettleRounds bounds the wait for a file that keeps changing: after
// that many Settle periods the reload is given up, and logged.
const maxSettleRounds = 30

// shrinkFraction is the part of the loaded users a new version of the
// file must keep to be installed at once; with fewer it is installed only
// if it is still the same a Settle later (a second look), since a file
// being rewritten in place looks like that for a moment.
const shrinkFraction = 0.9

// Reload rereads the file (on SIGHUP) through the same guard as Watch: it
// waits until the file has held still for Settle, reads it, and reads
// again if it changed meanwhile; a version that lists no users where the
// table has some is refused, and one that lists fewer than nine in ten of
// them is installed only on a second look, a Settle later. When the file
// cannot be read or parsed, or is refused, the last good table stays in
// use and the error is logged and returned. It returns early when ctx
// ends.
func (u *UsersFile) Reload(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	err := u.reload(ctx)
	if err != nil && ctx.Err() == nil {
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

func (u *UsersFile) settle() time.Duration {
	if u.Settle > 0 {
		return u.Settle
	}
	return DefaultSettle
}

// reload is Reload's guard; u.mu is held.
func (u *UsersFile) reload(ctx context.Context) error {
	var shrunk fileStamp // the version that shrank at the first look
	for range maxSettleRounds {
		before, err := u.stat()
		if err != nil {
			return err
		}
		if err := sleep(ctx, u.settle()); err != nil {
			return err
		}
		if now, err := u.stat(); err != nil {
			return err
		} else if now != before {
			continue // still being written
		}
		table, read, err := u.read()
		switch {
		case err != nil:
			return err
		case read != before:
			continue // changed while it was read
		case table.len() == 0 && u.Len() > 0:
			return &ParseError{File: u.path, Reason: fmt.Sprintf("lists no users, where %d are loaded: refused, since a file being rewritten looks like that (to start with no users, restart imapgate)", u.Len())}
		case float64(table.len()) < shrinkFraction*float64(u.Len()) && read != shrunk:
			u.logger.Warn("users file shrank; taking a second look before installing it",
				"users", u.Len(), "new_users", table.len(), "in", u.settle().String())
			shrunk = read
			continue
		}
		u.install(table, read == shrunk)
		return nil
	}
	return &ParseError{File: u.path, Reason: fmt.Sprintf("kept changing for %d periods of %s: not read (replace the file by rename)", maxSettleRounds, u.settle())}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stat returns the stamp of what the path names now.
func (u *UsersFile) stat() (fileStamp, error) {
	fi, err := os.Stat(u.path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("users file: %w", err)
	}
	return stampOf(fi), nil
}

// load reads and parses the file and, when it is good, installs the new
// table: the first load, which has no table to guard. u.mu must be held.
func (u *UsersFile) load() error {
	table, _, err := u.read()
	if err != nil {
		return err
	}
	u.install(table, false)
	return nil
}

// install makes table the one Select uses.
func (u *UsersFile) install(table *usersTable, secondLook bool) {
	u.table.Store(table)
	if secondLook {
		u.logger.Info("users file loaded", "users", table.len(), "after", "a second look")
		return
	}
	u.logger.Info("users file loaded", "users", table.len())
}

// read reads and parses the file, and returns the table and the stamp of
// the version read, taken after reading: if the file was written to
// meanwhile, the stamp differs from the one before. u.mu must be held.
func (u *UsersFile) read() (*usersTable, fileStamp, error) {
	f, err := os.Open(u.path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("users file: %w", err)
	}
	// Stamp what was opened, not what the path names later: if the file is
	// replaced while being read, Watch sees the difference and reads again.
	u.loaded = stampOf(fi)
	if !fi.Mode().IsRegular() {
		return nil, u.loaded, &ParseError{File: u.path, Reason: "not a regular file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxUsersFileSize+1))
	if err != nil {
		return nil, u.loaded, fmt.Errorf("users file: %w", err)
	}
	if len(data) > MaxUsersFileSize {
		return nil, u.loaded, &ParseError{File: u.path, Reason: fmt.Sprintf("larger than %d bytes", MaxUsersFileSize)}
	}
	if fi, err = f.Stat(); err == nil {
		u.loaded = stampOf(fi)
	}
	table, err := parseUsers(data, u.backends, u.lineDefault)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.File = u.path
		}
		return nil, u.loaded, err
	}
	return table, u.loaded, nil
}

// Watch reloads the file whenever it changes, until ctx is done. It polls
// the file's status every interval rather than using inotify: polling by
// path follows whatever the path names now, so it sees editors' atomic
// renames (a new inode) and Kubernetes ConfigMap updates (a swapped
// ..data symlink) that an inotify watch on the old inode would miss, and
// it needs no platform-specific code.
//
// A change is the modification time, size, inode or device differing
// from the version last read. It is read through Reload's guard, the
// same as on SIGHUP: not before it has held still, and not installed if
// it shrank too much at once. A rewrite keeping the size within the file
// system's timestamp granularity can go unseen; Reload (SIGHUP) forces a
// read. A broken or vanished file keeps the last good table and is
// logged once per change.
func (u *UsersFile) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	missing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := u.stat()
		if err != nil {
			if !missing {
				u.logger.Warn("users file unreadable; keeping the last good table", "err", err, "users", u.Len())
				missing = true
			}
			continue
		}
		missing = false
		u.mu.Lock()
		changed := now != u.loaded
		u.mu.Unlock()
		if changed {
			_ = u.Reload(ctx) // Reload logs its own failure.
		}
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
