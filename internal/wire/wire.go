// Package wire defines the udpprobe datagram: its layout, encoding and
// validation. docs/protocol.md is the normative description; this file and
// that document must agree.
//
// All integers are big-endian. L is the length of the UDP payload.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                   magic "UDPP" (0x55445050)                   |  0
//	+---------------+---------------+---------------+---------------+
//	|  version = 5  |     flags     |  name length  |  tag length   |  4
//	+---------------+---------------+---------------+---------------+
//	|                       session id (64)                         |  8
//	|                                                               |
//	+---------------------------------------------------------------+
//	|             sequence number (64, top bit always 0)            | 16
//	|                                                               |
//	+---------------------------------------------------------------+
//	|         send time, ns since the Unix epoch (signed 64)        | 24
//	|                                                               |
//	+---------------------------------------------------------------+
//	|     send clock, ns on the sender's monotonic clock (signed 64)| 32
//	|                                                               |
//	+---------------------------------------------------------------+
//	|      received count (64): in replies, 0 in probes             | 40
//	|                                                               |
//	+---------------------------------------------------------------+
//	|          name (name length bytes, 1..64)  ...                 | 48
//	+---------------+-----------------------------------------------+
//	| target length |  target (target length bytes, 0..255) ...     | 48+N
//	+---------------+-----------------------------------------------+
//	|      withheld count (64): in replies, 0 in probes             | 49+N+T
//	|                                                               |
//	+---------------------------------------------------------------+
//	|      reflector session (64): in replies, 0 in probes          | 57+N+T
//	|                                                               |
//	+---------------------------------------------------------------+
//	|      reply number (64): in replies, 0 in probes               | 65+N+T
//	|                                                               |
//	+---------------------------------------------------------------+
//	|      lost count (64): in replies, 0 in probes                 | 73+N+T
//	|                                                               |
//	+---------------+---------------+-------------------------------+
//	| traffic class |   hop limit   |    clock (error estimate)     | 81+N+T
//	+---------------+---------------+-------------------------------+
//	|             flow              |                                 85+N+T
//	+-------------------------------+
//	|          padding (any bytes, sent as zero) ...                |
//	+---------------------------------------------------------------+
//	|  tag (tag length bytes: 0, or 16 with authentication) ...    | L-4-tag length
//	+---------------------------------------------------------------+
//	|            CRC-32C of bytes [0, L-4)                          | L-4
//	+---------------------------------------------------------------+
//
// Version 4 is the same without the reflector session, the reply number,
// the lost count and the probe's fields after them; version 3 without the hello flag either, version 2 without
// the withheld count either, version 1 without the target length and the
// target too; all are still decoded, and a reply stays in the version of its
// probe.
//
// A hello (from version 4) asks a reflector for its name: the reply to it, the
// only datagram built anew rather than patched, carries the reflector's name
// in the target field, and the hello is sent long enough for any name
// (HelloSize).
//
// Encode and Decode work on caller-owned buffers and never allocate.
package wire

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/bits"
)

const (
	// Magic is the first four bytes of every datagram: "UDPP".
	Magic uint32 = 0x55445050
	// Version is the protocol version this package writes.
	Version = 5
	// Version4 is the version before the reply's account of each leg
	// (reflector session, reply number, lost count); still decoded.
	Version4 = 4
	// Version3 is the version before the hello; still decoded.
	Version3 = 3
	// Version2 is the version before the withheld count; still decoded.
	Version2 = 2
	// Version1 is the version before the target; still decoded.
	Version1 = 1

	// HeaderSize is the size of the fixed header before the name.
	HeaderSize = 48
	// TrailerSize is the size of the checksum at the end.
	TrailerSize = 4
	// MaxNameLen is the longest sender name.
	MaxNameLen = 64
	// MaxTargetLen is the longest target.
	MaxTargetLen = 255
	// MinDatagram is the shortest datagram of any version spoken: version 1
	// with a name of one byte.
	MinDatagram = HeaderSize + 1 + TrailerSize
	// MaxTagLen is the longest authentication tag the layout admits.
	MaxTagLen = 32
	// MaxSize is the largest datagram: the largest UDP payload over IPv4.
	MaxSize = 65507
	// MaxSeq is the largest sequence number. Keeping the top bit clear lets
	// receivers do sequence arithmetic without overflow.
	MaxSeq = 1<<63 - 1
)

// Flags is the flags byte.
type Flags uint8

const (
	// FlagGoodbye marks the last datagram of a session. Its sequence number is
	// the last data sequence number the sender sent; it is not itself data.
	FlagGoodbye Flags = 1 << 0
	// FlagReply marks a datagram a reflecting receiver sent back: the probe
	// it received, byte for byte but for this flag, the counts and
	// the checksum.
	FlagReply Flags = 1 << 1
	// FlagHello (from version 4) marks a hello: a datagram of no stream
	// that asks the reflector for its name. Its reply has FlagReply too and
	// carries the reflector's name in the target field.
	FlagHello Flags = 1 << 2

	knownFlags = FlagGoodbye | FlagReply | FlagHello
	// knownFlags3 are the flags of versions 1 to 3.
	knownFlags3 = FlagGoodbye | FlagReply
)

// Decoding errors. ErrChecksum means the datagram is ours but damaged; the
// others mean it is not a datagram of this protocol version.
var (
	ErrTooShort = errors.New("datagram shorter than the minimum")
	ErrMagic    = errors.New("bad magic")
	ErrVersion  = errors.New("unsupported version")
	ErrHeader   = errors.New("inconsistent header")
	ErrName     = errors.New("invalid sender name or target")
	ErrChecksum = errors.New("checksum mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded content of a datagram.
type Header struct {
	// Version is the version of a decoded datagram, 1 to 5. Encode writes
	// Version whatever it holds.
	Version  uint8
	Flags    Flags
	TagLen   uint8
	Session  uint64
	Seq      uint64
	SendTime int64 // ns since the Unix epoch, sender's wall clock
	// SendClock is the send time on the sender's monotonic clock, in ns from
	// an origin fixed for the session: differences between datagrams of one
	// session are immune to steps of the sender's wall clock.
	SendClock int64
	// Received is, in a reply, how many distinct sequence numbers of the
	// session the receiver had received when it reflected the datagram,
	// counting the datagram itself. Zero in probes.
	Received uint64
	// Withheld is, in a reply from version 3, how many replies to the
	// session's probes the receiver had held back (its reply rate limit)
	// before this one. Zero in probes and in older versions.
	Withheld uint64
	// Legs is, in a reply from version 5, the receiver's account of each
	// leg. Zero in probes and in older versions.
	Legs Legs
	// From version 5, what the sender says of how it sent the datagram
	// (zero in older versions). TrafficClass is the DSCP (high 6 bits)
	// and ECN (low 2) it set: the IPv4 TOS or IPv6 traffic class. HopLimit
	// is the IPv4 TTL or IPv6 hop limit it sent with, 0 where it does not
	// know. Clock is its clock's error estimate at the send, in the Error
	// Estimate format of RFC 4656 section 4.1.2 (as STAMP's). Flow is the
	// datagram's flow, 0 to n−1, where the sender probes a target from n
	// source ports.
	TrafficClass, HopLimit uint8
	Clock, Flow            uint16
	// Name is the sender's name. After Decode it aliases the decoded buffer.
	Name []byte
	// Target is how the sender names the receiver it sent the datagram
	// to: the target as the sender was given it. Empty in version 1, and
	// where the sender does not say. After Decode it aliases the buffer.
	Target []byte
}

// Legs is what a version-5 reply says of the session's two legs, so that
// the sender can count each by the rules a receiver counts a stream by.
type Legs struct {
	// Session is the receiver's own random, non-zero id for the sender's
	// session, drawn when it first heard the session: a new one means the
	// receiver restarted, and its numbers below started again.
	Session uint64
	// Number is the reply's number among the data replies the receiver
	// sent in the session: 0, 1, 2, … in the order it sent them, so that a
	// sender can count replies lost, duplicated and reordered on the way
	// back. In a goodbye's reply, how many it had sent (goodbyes' replies
	// are not numbered).
	Number uint64
	// Lost is how many of the session's sequence numbers the receiver had
	// counted lost (its waiting time) when it replied: the losses on the
	// way there. In a goodbye's reply, also those still pending up to the
	// goodbye's number: what it will count lost if nothing more arrives.
	Lost uint64
}

// Goodbye reports whether the datagram ends its session.
func (h *Header) Goodbye() bool { return h.Flags&FlagGoodbye != 0 }

// Reply reports whether the datagram is a reflected reply.
func (h *Header) Reply() bool { return h.Flags&FlagReply != 0 }

// Hello reports whether the datagram is a hello or the reply to one.
func (h *Header) Hello() bool { return h.Flags&FlagHello != 0 }

// MinSize is the smallest datagram that can carry a name of nameLen bytes
// and a target of targetLen bytes.
func MinSize(nameLen, targetLen int) int {
	return HeaderSize + nameLen + 1 + targetLen + countsSize(Version) + TrailerSize
}

// countsSize is the size of the fields after the target, in a datagram
// of version v: the withheld count from version 3, the legs and the
// probe's fields from version 5.
func countsSize(v byte) int {
	switch {
	case v >= Version:
		return withheldSize + legsSize + probeSize
	case v >= Version3:
		return withheldSize
	}
	return 0
}

// withheldSize is the size of the withheld count, legsSize of the legs,
// probeSize of the probe's fields after them.
const withheldSize, legsSize, probeSize = 8, 24, 6

// HelloSize is the size of a hello from a sender whose name is nameLen
// bytes, naming its target in targetLen bytes, with a tag of tagLen: room
// for the reply to carry the longest name instead of the target.
func HelloSize(nameLen, targetLen, tagLen int) int {
	return MinSize(nameLen, max(targetLen, MaxNameLen)) + tagLen
}

// ValidName reports whether name may be used as a sender name: 1 to 64 bytes
// of ASCII letters, digits, '.', '-', '_' or ':'. The receiver turns names into
// Prometheus label values, so the set is deliberately small.
func ValidName(name []byte) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for _, c := range name {
		if !nameChar(c) {
			return false
		}
	}
	return true
}

// ValidTarget reports whether target may be sent as a target: up to 255
// bytes of the name characters and '[', ']' and '%' (for IPv6 addresses
// and zones). The receiver turns targets into label values too.
func ValidTarget(target []byte) bool {
	if len(target) > MaxTargetLen {
		return false
	}
	for _, c := range target {
		if !nameChar(c) && c != '[' && c != ']' && c != '%' {
			return false
		}
	}
	return true
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == ':'
}

// Encode writes h into b, using all of b as the datagram: padding fills what
// the header, name and tag leave. The tag bytes are written as zero.
func Encode(b []byte, h *Header) error {
	if !ValidName(h.Name) || !ValidTarget(h.Target) {
		return ErrName
	}
	if h.Flags&^knownFlags != 0 || h.TagLen > MaxTagLen || h.Seq > MaxSeq {
		return ErrHeader
	}
	if len(b) < MinSize(len(h.Name), len(h.Target))+int(h.TagLen) || len(b) > MaxSize {
		return ErrTooShort
	}
	binary.BigEndian.PutUint32(b[0:], Magic)
	b[4] = Version
	b[5] = byte(h.Flags)
	b[6] = byte(len(h.Name))
	b[7] = h.TagLen
	binary.BigEndian.PutUint64(b[8:], h.Session)
	binary.BigEndian.PutUint64(b[16:], h.Seq)
	binary.BigEndian.PutUint64(b[24:], uint64(h.SendTime))
	binary.BigEndian.PutUint64(b[32:], uint64(h.SendClock))
	binary.BigEndian.PutUint64(b[40:], h.Received)
	n := HeaderSize + copy(b[HeaderSize:], h.Name)
	b[n] = byte(len(h.Target))
	n += 1 + copy(b[n+1:], h.Target)
	putCounts(b[n:], Version, h.Withheld, h.Legs)
	p := n + withheldSize + legsSize
	b[p], b[p+1] = h.TrafficClass, h.HopLimit
	binary.BigEndian.PutUint16(b[p+2:], h.Clock)
	binary.BigEndian.PutUint16(b[p+4:], h.Flow)
	n += countsSize(Version)
	clear(b[n : len(b)-TrailerSize])
	Seal(b)
	return nil
}

// Seal recomputes the checksum of an encoded datagram in place, for callers
// that patch fields of a datagram they encoded before.
func Seal(b []byte) {
	end := len(b) - TrailerSize
	binary.BigEndian.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
}

// PutSeq, PutSendTime and PutFlags patch an encoded datagram; call Seal
// afterwards.
func PutSeq(b []byte, seq uint64) { binary.BigEndian.PutUint64(b[16:], seq) }
func PutSendTime(b []byte, wall, clock int64) {
	binary.BigEndian.PutUint64(b[24:], uint64(wall))
	binary.BigEndian.PutUint64(b[32:], uint64(clock))
}
func PutFlags(b []byte, flags Flags) { b[5] = byte(flags) }

// PutClock patches the clock's error estimate of an encoded datagram of
// this version; call Seal afterwards.
func PutClock(b []byte, estimate uint16) {
	at := HeaderSize + int(b[6])
	at += 1 + int(b[at]) + withheldSize + legsSize
	binary.BigEndian.PutUint16(b[at+2:], estimate)
}

// putCounts writes the counts after the target of a datagram of version v.
func putCounts(b []byte, v byte, withheld uint64, legs Legs) {
	if v >= Version3 {
		binary.BigEndian.PutUint64(b, withheld)
	}
	if v >= Version {
		binary.BigEndian.PutUint64(b[8:], legs.Session)
		binary.BigEndian.PutUint64(b[16:], legs.Number)
		binary.BigEndian.PutUint64(b[24:], legs.Lost)
	}
}

// Counts are what a reply carries besides the probe.
type Counts struct {
	Received, Withheld uint64
	Legs               Legs
}

// MakeReply turns a decoded probe in b into its reply in place: the reply
// flag, the receiver's received count, from version 3 its withheld count,
// from version 5 its account of the legs, and a new checksum. The reply has
// the probe's size and version, so reflecting never amplifies and older
// senders get what they can read.
func MakeReply(b []byte, c Counts) {
	b[5] |= byte(FlagReply)
	binary.BigEndian.PutUint64(b[40:], c.Received)
	at := HeaderSize + int(b[6])
	if b[4] >= Version2 {
		at += 1 + int(b[at])
	}
	putCounts(b[at:], b[4], c.Withheld, c.Legs)
	Seal(b)
}

// MakeHelloReply turns a decoded hello in b into its reply in place: the
// reply flag, the reflector's name in the target field, zero counts and
// padding, and a new checksum; a tag, if the hello had one, is zero until
// the caller signs it. It reports false, leaving b as it was, if b is older
// than version 4 (hellos are no older), or name is not a valid name or does
// not fit in the hello's version: a reply is never longer than its hello.
func MakeHelloReply(b []byte, name []byte) bool {
	nameLen, tagLen := int(b[6]), int(b[7])
	if b[4] < Version4 || !ValidName(name) ||
		HeaderSize+nameLen+1+len(name)+countsSize(b[4])+TrailerSize+tagLen > len(b) {
		return false
	}
	b[5] |= byte(FlagReply)
	binary.BigEndian.PutUint64(b[40:], 0)
	at := HeaderSize + nameLen
	b[at] = byte(len(name))
	at += 1 + copy(b[at+1:], name)
	clear(b[at : len(b)-TrailerSize]) // the counts, the padding and the tag
	Seal(b)
	return true
}
func checksum(b []byte) (want, got uint32) {
	end := len(b) - TrailerSize
	return binary.BigEndian.Uint32(b[end:]), crc32.Checksum(b[:end], castagnoli)
}

// nearMiss is how many bits the magic and version of b differ by from the
// nearest version spoken.
func nearMiss(b []byte) int {
	m := bits.OnesCount32(binary.BigEndian.Uint32(b) ^ Magic)
	return m + min(bits.OnesCount8(b[4]^Version1), bits.OnesCount8(b[4]^Version2), bits.OnesCount8(b[4]^Version3),
		bits.OnesCount8(b[4]^Version4), bits.OnesCount8(b[4]^Version))
}

// Decode parses b into h, a datagram of any version spoken. h.Name and
// h.Target alias b.
//
// A datagram whose magic and version are within two bit errors of ours is
// treated as ours, so that a bit error in the first bytes is reported as
// ErrChecksum (damage) rather than ErrMagic (foreign traffic).
func Decode(b []byte, h *Header) error {
	if len(b) < MinDatagram {
		return ErrTooShort
	}
	if nearMiss(b) > 2 {
		if binary.BigEndian.Uint32(b) != Magic {
			return ErrMagic
		}
		return ErrVersion
	}
	if want, got := checksum(b); want != got {
		return ErrChecksum
	}
	if binary.BigEndian.Uint32(b) != Magic {
		return ErrMagic // a checksum collision on a near miss; not ours
	}
	version := b[4]
	if version < Version1 || version > Version {
		return ErrVersion
	}
	flags, nameLen, tagLen := Flags(b[5]), int(b[6]), int(b[7])
	// The end of the fields before the padding: the name, from version 2
	// the target length and the target, from version 3 the counts.
	end := HeaderSize + nameLen
	if version >= Version2 {
		end++
	}
	known := knownFlags
	if version < Version4 {
		known = knownFlags3
	}
	if flags&^known != 0 || tagLen > MaxTagLen || nameLen < 1 || nameLen > MaxNameLen ||
		end+tagLen+TrailerSize > len(b) {
		return ErrHeader
	}
	var target []byte
	var withheld uint64
	var legs Legs
	var tc, hop uint8
	var clk, flow uint16
	if version >= Version2 {
		targetLen := int(b[end-1])
		target = b[end : end+min(targetLen, len(b)-end)]
		end += targetLen
		counts := end
		end += countsSize(version)
		if end+tagLen+TrailerSize > len(b) {
			return ErrHeader
		}
		if version >= Version3 {
			withheld = binary.BigEndian.Uint64(b[counts:])
		}
		if version >= Version {
			legs.Session = binary.BigEndian.Uint64(b[counts+8:])
			legs.Number = binary.BigEndian.Uint64(b[counts+16:])
			legs.Lost = binary.BigEndian.Uint64(b[counts+24:])
			p := b[counts+withheldSize+legsSize:]
			tc, hop = p[0], p[1]
			clk, flow = binary.BigEndian.Uint16(p[2:]), binary.BigEndian.Uint16(p[4:])
		}
	}
	seq := binary.BigEndian.Uint64(b[16:])
	if seq > MaxSeq {
		return ErrHeader
	}
	name := b[HeaderSize : HeaderSize+nameLen]
	if !ValidName(name) || !ValidTarget(target) {
		return ErrName
	}
	h.Version = version
	h.Flags = flags
	h.TagLen = uint8(tagLen)
	h.Session = binary.BigEndian.Uint64(b[8:])
	h.Seq = seq
	h.SendTime = int64(binary.BigEndian.Uint64(b[24:]))
	h.SendClock = int64(binary.BigEndian.Uint64(b[32:]))
	h.Received = binary.BigEndian.Uint64(b[40:])
	h.Name = name
	h.Target = target
	h.Withheld = withheld
	h.Legs = legs
	h.TrafficClass, h.HopLimit, h.Clock, h.Flow = tc, hop, clk, flow
	return nil
}
