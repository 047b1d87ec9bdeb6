package state

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
)

// Digester turns credentials into keyed digests (HMAC-SHA256), so that a
// password can be recognised again without being stored. Safe for
// concurrent use; a digest allocates nothing.
type Digester struct {
	pool sync.Pool // of *hasher
}

// hasher is an HMAC with the key, and scratch space.
type hasher struct {
	mac hash.Hash
	in  []byte
	out []byte
}

// NewDigester returns a Digester with key; a nil key means a random one
// that lives only in this process, so that a memory dump or a log of
// digests cannot be checked against guesses offline.
func NewDigester(key []byte) *Digester {
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key) // never fails (crypto/rand panics instead)
	}
	key = append([]byte(nil), key...)
	d := &Digester{}
	d.pool.New = func() any {
		return &hasher{mac: hmac.New(sha256.New, key), out: make([]byte, 0, sha256.Size)}
	}
	return d
}

// Sum returns HMAC(key, fields), each field prefixed by its length so that
// ("ab","c") and ("a","bc") differ.
func (d *Digester) Sum(fields ...string) [sha256.Size]byte {
	h := d.pool.Get().(*hasher)
	h.in = h.in[:0]
	for _, s := range fields {
		h.in = binary.BigEndian.AppendUint32(h.in, uint32(len(s)))
		h.in = append(h.in, s...)
	}
	h.mac.Reset()
	h.mac.Write(h.in)
	var sum [sha256.Size]byte
	copy(sum[:], h.mac.Sum(h.out[:0]))
	// The scratch held a password: do not keep it around.
	clear(h.in)
	d.pool.Put(h)
	return sum
}

// Fingerprint is the first 8 bytes of Sum(user, password).
func (d *Digester) Fingerprint(user, password string) uint64 {
	sum := d.Sum(user, password)
	return binary.BigEndian.Uint64(sum[:8])
}
