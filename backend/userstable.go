package backend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"unicode/utf8"
)

// usersTable is one version of a users file as Select reads it: each
// user's backend, by a 128-bit hash of the user's folded name (foldUser)
// under seeds of the table's own.
//
// Keyed by the names themselves, a table cost some 90 bytes of heap a
// user, with a string and two pointers each for the collector to trace,
// and building it made three objects a line: a 1M-line file took 170 MiB
// of RSS once loaded and 270 MiB through a reload (make bench, growth).
// A hashed key with the backend as a small index is some 30 bytes with
// no pointer, and a line is parsed without an allocation. Two names
// sharing a hash would share a backend: at a million users the chance
// that any two do is about 2^-88, under seeds an attacker never sees.
type usersTable struct {
	users    map[userKey]uint16 // index into backends
	backends []*Backend
	seeds    [2]maphash.Seed
	// index is backends' inverse, while the table is being built.
	index map[*Backend]uint16
}

// userKey is a usersTable's key for a folded user name.
type userKey [2]uint64

// newUsersTable returns an empty table made for size users.
func newUsersTable(size int) *usersTable {
	return &usersTable{users: make(map[userKey]uint16, size), index: map[*Backend]uint16{},
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

// key returns the key of the folded name.
func (t *usersTable) key(folded []byte) userKey {
	return userKey{maphash.Bytes(t.seeds[0], folded), maphash.Bytes(t.seeds[1], folded)}
}

// lookup returns user's backend, nil for a user the table does not list.
func (t *usersTable) lookup(user string) *Backend {
	var buf [64]byte // most names fold without an allocation
	i, ok := t.users[t.key(appendFolded(buf[:0], user))]
	if !ok {
		return nil
	}
	return t.backends[i]
}

// len returns the number of users.
func (t *usersTable) len() int { return len(t.users) }

// add lists the user whose folded name has key k on b; it reports false,
// listing nothing, for a user listed already.
func (t *usersTable) add(k userKey, b *Backend) (bool, error) {
	if _, dup := t.users[k]; dup {
		return false, nil
	}
	i, ok := t.index[b]
	if !ok {
		if len(t.backends) > 1<<16-1 {
			return false, errors.New("more than 65,535 backends")
		}
		i = uint16(len(t.backends))
		t.backends = append(t.backends, b)
		t.index[b] = i
	}
	t.users[k] = i
	return true, nil
}

// appendFolded appends name folded as foldUser folds it: each rune
// replaced by foldRune, invalid UTF-8 bytes kept as they are. ASCII, most
// names, takes a short cut: a letter's orbit has its upper case as its
// smallest rune (k and s too: the Kelvin sign and the long s are above
// them), and no other ASCII rune folds.
func appendFolded[T string | []byte](dst []byte, name T) []byte {
	for i := 0; i < len(name); {
		if c := name[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := decodeRune(name[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, name[i])
		} else {
			dst = utf8.AppendRune(dst, foldRune(r))
		}
		i += size
	}
	return dst
}

// decodeRune is utf8.DecodeRune for a string or a byte slice.
func decodeRune[T string | []byte](s T) (rune, int) {
	switch s := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(s)
	case []byte:
		return utf8.DecodeRune(s)
	}
	return utf8.RuneError, 1
}

// lineFields splits a users-file line into its fields, its comment cut,
// keeping the first three in fields, and returns how many it has. The
// separators are spaces, tabs and '\r' (files written on Windows).
func lineFields(line []byte, fields *[3][]byte) int {
	if i := bytes.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	isSep := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }
	n := 0
	for {
		for len(line) > 0 && isSep(line[0]) {
			line = line[1:]
		}
		if len(line) == 0 {
			return n
		}
		j := 0
		for j < len(line) && !isSep(line[j]) {
			j++
		}
		if n < len(fields) {
			fields[n] = line[:j]
		}
		n++
		line = line[j:]
	}
}

// parseUsers parses the contents of a users file into a table.
//
// The table is made for every line at once: a map grown one insert at a
// time splits its tables again and again as it grows, rehashing each
// entry at every split, so that a file of 1M lines cost 4 times more per
// line than one of 10k (BenchmarkParseUsers) and left the old tables as
// garbage. Duplicates are found in the table itself; only the error
// looks for the first line that listed the user.
func parseUsers(data []byte, backends map[string]*Backend, lineDefault *Backend) (*usersTable, error) {
	t := newUsersTable(bytes.Count(data, []byte{'\n'}) + 1)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxUsersFileLine)
	var fields [3][]byte
	var folded []byte
	n := 0
	for sc.Scan() {
		n++
		nf := lineFields(sc.Bytes(), &fields)
		if nf == 0 {
			continue
		}
		b, err := lineBackend(nf, &fields, backends, lineDefault)
		if err != nil {
			return nil, &ParseError{Line: n, Reason: err.Error()}
		}
		folded = appendFolded(folded[:0], fields[0])
		k := t.key(folded)
		if added, err := t.add(k, b); err != nil {
			return nil, &ParseError{Line: n, Reason: err.Error()}
		} else if !added {
			return nil, &ParseError{Line: n, Reason: fmt.Sprintf("user %q already listed on line %d", fields[0], t.firstListing(data, k))}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: n + 1, Reason: fmt.Sprintf("line longer than %d bytes", MaxUsersFileLine)}
		}
		return nil, &ParseError{Line: n + 1, Reason: err.Error()}
	}
	t.index = nil
	return t, nil
}

// lineBackend returns the backend of a line of nf fields.
func lineBackend(nf int, fields *[3][]byte, backends map[string]*Backend, lineDefault *Backend) (*Backend, error) {
	switch nf {
	case 1:
		if lineDefault == nil {
			return nil, fmt.Errorf("user %q names no backend and no default for such lines is set (IMAPGATE_USERS_FILE_BACKEND)", fields[0])
		}
		return lineDefault, nil
	case 2:
		b, known := backends[string(fields[1])]
		if !known {
			return nil, fmt.Errorf("unknown backend %q for user %q", fields[1], fields[0])
		}
		return b, nil
	}
	return nil, fmt.Errorf("%d fields; want \"user\" or \"user backend\"", nf)
}

// firstListing returns the number of the first line of data that lists
// the user whose key is k (0 if none does), for the error about a user
// listed twice.
func (t *usersTable) firstListing(data []byte, k userKey) int {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxUsersFileLine)
	var fields [3][]byte
	for n := 1; sc.Scan(); n++ {
		if lineFields(sc.Bytes(), &fields) > 0 && t.key(appendFolded(nil, fields[0])) == k {
			return n
		}
	}
	return 0
}
