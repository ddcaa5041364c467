package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// TagSize is the length of the authentication tag: HMAC-SHA-256 cut to its
// first 16 bytes (RFC 2104 section 5).
const TagSize = 16

// MinKeyLen and MaxKeyLen bound an authentication key, in bytes.
const (
	MinKeyLen = 16
	MaxKeyLen = 256
)

// MaxKeys is how many keys an Auth holds: two during a rotation.
const MaxKeys = 2

// CheckKeys applies the rules for a set of keys: one, or two during a
// rotation, each MinKeyLen to MaxKeyLen bytes. Its errors never show a key.
func CheckKeys(keys [][]byte) error {
	if len(keys) == 0 || len(keys) > MaxKeys {
		return fmt.Errorf("%d keys: want 1, or %d during a rotation", len(keys), MaxKeys)
	}
	for i, k := range keys {
		if len(k) < MinKeyLen || len(k) > MaxKeyLen {
			return fmt.Errorf("key %d is %d bytes: want %d to %d", i+1, len(k), MinKeyLen, MaxKeyLen)
		}
	}
	return nil
}

// ErrAuth means a datagram is not authenticated by any of the keys.
var ErrAuth = errors.New("not authenticated")

// Auth signs and verifies datagrams with HMAC-SHA-256 under one or two keys.
// The tag is computed over every byte before the tag field, the header's tag
// length included, and the checksum then covers the tag. An Auth is not
// safe for concurrent use; it allocates nothing per datagram.
type Auth struct {
	macs []hash.Hash
	sum  [sha256.Size]byte
}

// NewAuth returns an Auth for keys; the first one signs.
func NewAuth(keys [][]byte) (*Auth, error) {
	if err := CheckKeys(keys); err != nil {
		return nil, err
	}
	a := &Auth{}
	for _, k := range keys {
		a.macs = append(a.macs, hmac.New(sha256.New, k))
	}
	return a, nil
}

// tag computes the tag of the encoded datagram b under key i.
func (a *Auth) tag(b []byte, i int) []byte {
	m := a.macs[i]
	m.Reset()
	m.Write(b[:len(b)-TrailerSize-TagSize])
	return m.Sum(a.sum[:0])[:TagSize]
}

// Sign writes the tag of b under key i (0 is the signing key) into its tag
// field and seals it. b must have been encoded with TagLen TagSize.
func (a *Auth) Sign(b []byte, i int) {
	end := len(b) - TrailerSize
	copy(b[end-TagSize:end], a.tag(b, i))
	Seal(b)
}

// Verify returns the index of the key whose tag the decoded datagram b
// carries, or ErrAuth: without a tag of TagSize, or with a tag none of the
// keys made. The comparison takes the same time wherever the tags differ.
func (a *Auth) Verify(b []byte) (int, error) {
	if len(b) < MinDatagram+TagSize || b[7] != TagSize {
		return -1, ErrAuth
	}
	end := len(b) - TrailerSize
	got := b[end-TagSize : end]
	for i := range a.macs {
		if hmac.Equal(a.tag(b, i), got) {
			return i, nil
		}
	}
	return -1, ErrAuth
}
