// Package stamp encodes and decodes the test packets of STAMP, the Simple
// Two-Way Active Measurement Protocol (RFC 8762), with the extensions of
// RFC 8972: the Session-Sender Identifier (SSID) and TLVs after the base
// packet. Both modes are here: unauthenticated (a 44-octet base) and
// authenticated (112 octets, HMAC-SHA-256 over the first 96, cut to 16,
// RFC 8762 section 4.4). TWAMP-Light packets (RFC 5357 Appendix I) have
// the unauthenticated layout; a TWAMP-Light sender's shorter probes decode
// with the missing fields zero.
//
// Decoding writes into a caller's struct and allocates nothing: TLV values
// alias the packet. Encoding appends to a caller's buffer. Neither is safe
// for concurrent use with the same Auth.
package stamp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"math"
	"slices"
	"time"

	"github.com/udpprobe/udpprobe/internal/wire"
)

// Port is STAMP's well-known port (RFC 8762 section 4.1).
const Port = 862

// Sizes of the base packets, in octets, and where the HMAC sits in an
// authenticated one.
const (
	BaseSize     = 44
	AuthBaseSize = 112
	hmacAt       = 96
	HMACSize     = 16
	// MinTestSize is the shortest unauthenticated test packet taken: the
	// sequence number, timestamp and error estimate of a TWAMP-Light probe.
	MinTestSize = 14
)

// TLV types (RFC 8972 section 4 and the IANA registry) and flags.
const (
	TypeExtraPadding   = 1
	TypeLocation       = 2
	TypeTimestampInfo  = 3
	TypeClassOfService = 4
	TypeHMAC           = 8

	FlagUnrecognized = 0x80 // U: the reflector does not know the type
	FlagMalformed    = 0x40 // M
	FlagIntegrity    = 0x20 // I: the HMAC TLV did not verify

	// TLVHeaderSize is a TLV's flags, type and length.
	TLVHeaderSize = 4
	// MaxTLVs bounds the TLVs decoded from one packet; more mark it
	// malformed.
	MaxTLVs = 16
)

// Errors of decoding.
var (
	ErrTooShort = errors.New("stamp: packet too short")
	ErrAuth     = errors.New("stamp: HMAC does not verify")
)

// Timestamp is a 64-bit NTP timestamp: seconds since 1900 in the high 32
// bits, a binary fraction in the low 32 (RFC 5905 section 6).
type Timestamp uint64

// ntpEpoch is 1900-01-01 in Unix seconds.
const ntpEpoch = -2208988800

// NTP is t as an NTP timestamp, the fraction rounded down.
func NTP(t time.Time) Timestamp {
	sec := uint64(t.Unix() - ntpEpoch)
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return Timestamp(sec<<32 | frac)
}

// Time is the timestamp as a time, to the nanosecond rounded down; the
// era is the one of 1900 to 2036 or, for seconds below 2^31, the one after
// (RFC 5905 section 6), so timestamps stay meaningful past 2036.
func (ts Timestamp) Time() time.Time {
	sec := int64(ts >> 32)
	if sec < 1<<31 {
		sec += 1 << 32
	}
	nsec := (uint64(ts&0xFFFFFFFF) * 1e9) >> 32
	return time.Unix(sec+ntpEpoch, int64(nsec))
}

// ErrorEstimate is the Error Estimate field (RFC 4656 section 4.1.2): S,
// the clock is synchronised to UTC by an external source; Z, the timestamp
// is PTP (RFC 8186; udpprobe writes NTP); a 6-bit scale and an 8-bit
// multiplier, the error being multiplier × 2^(scale−32) seconds.
type ErrorEstimate uint16

const (
	estimateS = 0x8000
	estimateZ = 0x4000
)

// Estimate is the error estimate of a clock that is synchronised or not
// and whose error is at most maxError: the smallest value not below it
// (the multiplier is never zero, as RFC 4656 requires).
func Estimate(synchronised bool, maxError time.Duration) ErrorEstimate {
	var e ErrorEstimate
	if synchronised {
		e = estimateS
	}
	// The error in units of 2^-32 s, rounded up; then the smallest scale
	// whose multiplier fits in 8 bits.
	units := math.Ceil(maxError.Seconds() * (1 << 32))
	if units < 1 {
		return e | 1 // 2^-32 s, the least there is
	}
	for scale := range 64 {
		if m := math.Ceil(units / math.Ldexp(1, scale)); m <= 255 {
			return e | ErrorEstimate(scale)<<8 | ErrorEstimate(m)
		}
	}
	return e | 63<<8 | 255 // not reached: a Duration is under 255 × 2^31 s
}

// Synchronised is the S bit.
func (e ErrorEstimate) Synchronised() bool { return e&estimateS != 0 }

// PTP is the Z bit: the timestamps are PTPv2 truncated, not NTP.
func (e ErrorEstimate) PTP() bool { return e&estimateZ != 0 }

// Error is the estimated error, capped at the largest duration.
func (e ErrorEstimate) Error() time.Duration {
	scale, mult := int(e>>8&0x3F), float64(e&0xFF)
	s := math.Ldexp(mult, scale-32)
	if s >= math.MaxInt64/1e9 {
		return math.MaxInt64
	}
	return time.Duration(math.Ceil(s * 1e9))
}

// TLV is one of RFC 8972's TLVs. Decoded, Value aliases the packet.
type TLV struct {
	Flags uint8
	Type  uint8
	Value []byte
}

// Test is a Session-Sender test packet.
type Test struct {
	Seq           uint32
	Timestamp     Timestamp
	ErrorEstimate ErrorEstimate
	SSID          uint16
	TLVs          []TLV
	// Malformed: what follows the base packet is not a whole number of
	// TLVs, or has more than MaxTLVs; TLVs holds those before the fault.
	Malformed bool
}

// Reflected is a Session-Reflector test packet: the reflector's own
// sequence number and timestamps, and what it received.
type Reflected struct {
	Seq                 uint32
	Timestamp           Timestamp // when the reflector sent it
	ErrorEstimate       ErrorEstimate
	SSID                uint16
	ReceiveTimestamp    Timestamp // when the reflector received the test packet
	SenderSeq           uint32
	SenderTimestamp     Timestamp
	SenderErrorEstimate ErrorEstimate
	SenderTTL           uint8
	TLVs                []TLV
	Malformed           bool
}

// Auth signs and verifies authenticated packets under one key, or two
// during a rotation (the first signs, either verifies); the keys follow
// udpprobe's rules (wire.CheckKeys). A nil *Auth is unauthenticated mode.
type Auth struct {
	macs []hash.Hash
	sum  [sha256.Size]byte
}

// NewAuth returns an Auth for keys.
func NewAuth(keys [][]byte) (*Auth, error) {
	if err := wire.CheckKeys(keys); err != nil {
		return nil, err
	}
	a := &Auth{}
	for _, k := range keys {
		a.macs = append(a.macs, hmac.New(sha256.New, k))
	}
	return a, nil
}

func (a *Auth) mac(i int, base []byte) []byte {
	m := a.macs[i]
	m.Reset()
	m.Write(base)
	return m.Sum(a.sum[:0])[:HMACSize]
}

func (a *Auth) sign(p []byte) { copy(p[hmacAt:AuthBaseSize], a.mac(0, p[:hmacAt])) }

func (a *Auth) verify(p []byte) bool {
	for i := range a.macs {
		if hmac.Equal(a.mac(i, p[:hmacAt]), p[hmacAt:AuthBaseSize]) {
			return true
		}
	}
	return false
}

// The offsets of the fields, unauthenticated and authenticated.
type layout struct {
	size, seq, ts, ee, ssid, rx, sseq, sts, see, ttl int
}

var (
	plain  = layout{size: BaseSize, seq: 0, ts: 4, ee: 12, ssid: 14, rx: 16, sseq: 24, sts: 28, see: 36, ttl: 40}
	signed = layout{size: AuthBaseSize, seq: 0, ts: 16, ee: 24, ssid: 26, rx: 32, sseq: 48, sts: 64, see: 72, ttl: 80}
)

// BaseSizeOf is the base packet's size in a's mode.
func BaseSizeOf(a *Auth) int { return layoutOf(a).size }

func layoutOf(a *Auth) layout {
	if a != nil {
		return signed
	}
	return plain
}

var be = binary.BigEndian

// base grows b by a zeroed base packet and returns both.
func base(b []byte, size int) ([]byte, []byte) {
	n := len(b)
	b = slices.Grow(b, size)[:n+size]
	clear(b[n:])
	return b, b[n:]
}

// Append appends the packet to b, signed when a is not nil.
func (t *Test) Append(b []byte, a *Auth) []byte {
	l := layoutOf(a)
	b, p := base(b, l.size)
	putHead(p, l, t.Seq, t.Timestamp, t.ErrorEstimate, t.SSID)
	if a != nil {
		a.sign(p)
	}
	return appendTLVs(b, t.TLVs)
}

// Append appends the packet to b, signed when a is not nil.
func (r *Reflected) Append(b []byte, a *Auth) []byte {
	l := layoutOf(a)
	b, p := base(b, l.size)
	putHead(p, l, r.Seq, r.Timestamp, r.ErrorEstimate, r.SSID)
	be.PutUint64(p[l.rx:], uint64(r.ReceiveTimestamp))
	be.PutUint32(p[l.sseq:], r.SenderSeq)
	be.PutUint64(p[l.sts:], uint64(r.SenderTimestamp))
	be.PutUint16(p[l.see:], uint16(r.SenderErrorEstimate))
	p[l.ttl] = r.SenderTTL
	if a != nil {
		a.sign(p)
	}
	return appendTLVs(b, r.TLVs)
}

// putHead writes the fields both directions begin with: the packet's own
// sequence number, timestamp, error estimate and SSID.
func putHead(p []byte, l layout, seq uint32, ts Timestamp, e ErrorEstimate, ssid uint16) {
	be.PutUint32(p[l.seq:], seq)
	be.PutUint64(p[l.ts:], uint64(ts))
	be.PutUint16(p[l.ee:], uint16(e))
	be.PutUint16(p[l.ssid:], ssid)
}

// readHead reads what putHead writes.
func readHead(p []byte, l layout) (uint32, Timestamp, ErrorEstimate, uint16) {
	return be.Uint32(p[l.seq:]), Timestamp(be.Uint64(p[l.ts:])), ErrorEstimate(be.Uint16(p[l.ee:])), be.Uint16(p[l.ssid:])
}

func appendTLVs(b []byte, tlvs []TLV) []byte {
	for _, t := range tlvs {
		b = append(b, t.Flags, t.Type)
		b = be.AppendUint16(b, uint16(min(len(t.Value), math.MaxUint16)))
		b = append(b, t.Value[:min(len(t.Value), math.MaxUint16)]...)
	}
	return b
}

// Restamp rewrites the sequence number, timestamp and error estimate of a
// test packet made by Append under the same a, and signs it again: a
// sender's packets differ only in these.
func Restamp(p []byte, seq uint32, ts Timestamp, e ErrorEstimate, a *Auth) {
	l := layoutOf(a)
	be.PutUint32(p[l.seq:], seq)
	be.PutUint64(p[l.ts:], uint64(ts))
	be.PutUint16(p[l.ee:], uint16(e))
	if a != nil {
		a.sign(p)
	}
}

// DecodeTest decodes a test packet into t. Unauthenticated (a nil), a
// packet shorter than the base is a TWAMP-Light probe: the fields it lacks
// are zero. Authenticated, it must be whole and its HMAC must verify.
func DecodeTest(b []byte, t *Test, a *Auth) error {
	l, p, err := check(b, a)
	if err != nil {
		return err
	}
	t.Seq, t.Timestamp, t.ErrorEstimate, t.SSID = readHead(p, l)
	t.TLVs, t.Malformed = decodeTLVs(t.TLVs[:0], b, l.size)
	return nil
}

// DecodeReflected decodes a reflected packet into r, as DecodeTest does.
func DecodeReflected(b []byte, r *Reflected, a *Auth) error {
	l, p, err := check(b, a)
	if err != nil {
		return err
	}
	r.Seq, r.Timestamp, r.ErrorEstimate, r.SSID = readHead(p, l)
	r.ReceiveTimestamp = Timestamp(be.Uint64(p[l.rx:]))
	r.SenderSeq = be.Uint32(p[l.sseq:])
	r.SenderTimestamp = Timestamp(be.Uint64(p[l.sts:]))
	r.SenderErrorEstimate = ErrorEstimate(be.Uint16(p[l.see:]))
	r.SenderTTL = p[l.ttl]
	r.TLVs, r.Malformed = decodeTLVs(r.TLVs[:0], b, l.size)
	return nil
}

// check returns the layout and the base packet to read, zero-filled past
// the end of a short unauthenticated one.
func check(b []byte, a *Auth) (layout, []byte, error) {
	l := layoutOf(a)
	if a != nil {
		if len(b) < AuthBaseSize {
			return l, nil, ErrTooShort
		}
		if !a.verify(b) {
			return l, nil, ErrAuth
		}
		return l, b, nil
	}
	switch {
	case len(b) < MinTestSize:
		return l, nil, ErrTooShort
	case len(b) < BaseSize:
		var whole [BaseSize]byte
		copy(whole[:], b)
		return l, whole[:], nil
	}
	return l, b, nil
}

// decodeTLVs appends the TLVs after the base packet to tlvs.
func decodeTLVs(tlvs []TLV, b []byte, at int) ([]TLV, bool) {
	if len(b) <= at {
		return tlvs, false
	}
	rest := b[at:]
	for len(rest) > 0 {
		if len(rest) < TLVHeaderSize || len(tlvs) == MaxTLVs {
			return tlvs, true
		}
		n := int(be.Uint16(rest[2:]))
		if len(rest) < TLVHeaderSize+n {
			return tlvs, true
		}
		tlvs = append(tlvs, TLV{Flags: rest[0], Type: rest[1], Value: rest[TLVHeaderSize : TLVHeaderSize+n : TLVHeaderSize+n]})
		rest = rest[TLVHeaderSize+n:]
	}
	return tlvs, false
}

// ClassOfService is the value of a Class of Service TLV (RFC 8972 section
// 5.2): DSCP1, the DSCP the sender asks the reflector to reply with;
// DSCP2 and ECN, what the probe arrived with, filled in by the reflector;
// RP, the reverse path's treatment.
type ClassOfService struct {
	DSCP1, DSCP2, ECN, RP uint8
}

// Value is the TLV's 4-octet value.
func (c ClassOfService) Value() [4]byte {
	return [4]byte{c.DSCP1<<2 | c.DSCP2>>4&0x3, c.DSCP2<<4 | c.ECN&0x3<<2 | c.RP&0x3}
}

// ParseClassOfService reads a Class of Service TLV's value.
func ParseClassOfService(v []byte) (ClassOfService, bool) {
	if len(v) != 4 {
		return ClassOfService{}, false
	}
	return ClassOfService{DSCP1: v[0] >> 2, DSCP2: v[0]&0x3<<4 | v[1]>>4, ECN: v[1] >> 2 & 0x3, RP: v[1] & 0x3}, true
}
