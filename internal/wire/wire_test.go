package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
)

func testHeader() Header {
	return Header{
		Session:   0x0102030405060708,
		Seq:       42,
		SendTime:  1_700_000_000_123_456_789,
		SendClock: 123_456_789,
		Name:      []byte("alpha"),
		Target:    []byte("rx:6464"),
		// DSCP 46 (EF) with ECT(1), TTL 64, a synchronised clock within
		// 2^-5 × 5 s, flow 3.
		TrafficClass: 0xb9, HopLimit: 64, Clock: 0x8a05, Flow: 3,
	}
}

// golden is testHeader encoded into 110 bytes, laid out by hand from
// docs/protocol.md; its checksum came from an independent bitwise CRC-32C
// (polynomial 0x82F63B78), not from this package.
const golden = "55445050" + "05" + "00" + "05" + "00" + // magic, version, flags, name len, tag len
	"0102030405060708" + // session
	"000000000000002a" + // sequence 42
	"17979cfe3d85cd15" + // send time 1700000000123456789
	"00000000075bcd15" + // send clock 123456789
	"0000000000000000" + // received count, 0 in a probe
	"616c706861" + // "alpha"
	"07" + "72783a36343634" + // target length 7, "rx:6464"
	"0000000000000000" + // withheld count, 0 in a probe
	"0000000000000000" + // reflector session, 0 in a probe
	"0000000000000000" + // reply number, 0 in a probe
	"0000000000000000" + // lost count, 0 in a probe
	"b9" + "40" + "8a05" + "0003" + // traffic class, hop limit, clock, flow
	"00000000000000" + // 7 bytes of padding
	"0d003dee" // CRC-32C of the 106 bytes before it

// testCounts are what the golden replies carry: reply number 11 with 5
// withheld before it is the 17th datagram received (11 + 1 + 5).
var testCounts = Counts{Received: 17, Withheld: 5, Legs: Legs{Session: 0x1112131415161718, Number: 11, Lost: 1}}

// goldenReply is golden after MakeReply(b, testCounts), by hand the same way.
const goldenReply = "55445050" + "05" + "02" + "05" + "00" + // flags: reply
	"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
	"0000000000000011" + // received count 17
	"616c706861" + "07" + "72783a36343634" +
	"0000000000000005" + // withheld count 5
	"1112131415161718" + // reflector session
	"000000000000000b" + // reply number 11
	"0000000000000001" + // lost count 1
	"b9" + "40" + "8a05" + "0003" + // the probe's, unchanged
	"00000000000000" +
	"dc735a95"

// goldenV4 is testHeader in version 4, which has no legs, in 80 bytes,
// and goldenV4Reply its reply: MakeReply(b, testCounts) leaves the legs
// out.
const (
	goldenV4 = "55445050" + "04" + "00" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" + "07" + "72783a36343634" + "0000000000000000" + "00000000000000" +
		"854cea6d"
	goldenV4Reply = "55445050" + "04" + "02" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000011" + "616c706861" + "07" + "72783a36343634" + "0000000000000005" + "00000000000000" +
		"6505579f"
)

// goldenV3 is testHeader in version 3, which has no hello, and
// goldenV3Reply its reply: the layout of version 4.
const (
	goldenV3 = "55445050" + "03" + "00" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" + "07" + "72783a36343634" + "0000000000000000" + "00000000000000" +
		"2876f78f"
	goldenV3Reply = "55445050" + "03" + "02" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000011" + "616c706861" + "07" + "72783a36343634" + "0000000000000005" + "00000000000000" +
		"c83f4a7d"
)

// goldenHello is a hello from alpha to 10.0.0.2:6464 in 160 bytes
// (HelloSize: room for a 64-byte name), and goldenHelloReply its reply from
// a reflector named node-b, by hand and an independent CRC-32C.
var (
	goldenHello = "55445050" + "05" + "04" + "05" + "00" + // flags: hello
		"0102030405060708" + "0000000000000000" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" +
		"0d" + "31302e302e302e323a36343634" + // target length 13, "10.0.0.2:6464"
		strings.Repeat("00", 32) + // withheld count and legs
		"b9" + "40" + "8a05" + "0003" +
		strings.Repeat("00", 51) + // padding
		"a3cd02de"
	goldenHelloReply = "55445050" + "05" + "06" + "05" + "00" + // flags: hello, reply
		"0102030405060708" + "0000000000000000" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" +
		"06" + "6e6f64652d62" + // the reflector's name: length 6, "node-b"
		strings.Repeat("00", 38) + // withheld count, legs and the probe's fields
		strings.Repeat("00", 58) + // padding
		"8f3d1ce5"
)

// goldenHelloV4 and goldenHelloV4Reply: the same in version 4, which
// mesh nodes of the previous release send and a node still answers.
var (
	goldenHelloV4 = "55445050" + "04" + "04" + "05" + "00" + // flags: hello
		"0102030405060708" + "0000000000000000" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" +
		"0d" + "31302e302e302e323a36343634" + // target length 13, "10.0.0.2:6464"
		"0000000000000000" + // withheld count
		strings.Repeat("00", 51) + // padding
		"0bae6843"
	goldenHelloV4Reply = "55445050" + "04" + "06" + "05" + "00" + // flags: hello, reply
		"0102030405060708" + "0000000000000000" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" +
		"06" + "6e6f64652d62" + // the reflector's name: length 6, "node-b"
		"0000000000000000" + // withheld count
		strings.Repeat("00", 58) + // padding
		"89e5c962"
)

// goldenV2 is testHeader in version 2, which has no withheld count, in 72
// bytes, and goldenV2Reply its reply: MakeReply(b, testCounts) leaves the
// withheld count out.
const (
	goldenV2 = "55445050" + "02" + "00" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" + "07" + "72783a36343634" + "00000000000000" +
		"4cf0cfcd"
	goldenV2Reply = "55445050" + "02" + "02" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000011" + "616c706861" + "07" + "72783a36343634" + "00000000000000" +
		"9d7c5e8b"
)

// goldenV1 is testHeader in version 1, which has no target, in 64 bytes,
// and goldenV1Reply its reply with received count 17: what senders before
// version 2 send and get back.
const (
	goldenV1 = "55445050" + "01" + "00" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" + "00000000000000" +
		"078be7a5"
	goldenV1Reply = "55445050" + "01" + "02" + "05" + "00" +
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000011" + "616c706861" + "00000000000000" +
		"8445b3ca"
)

func TestEncodeGolden(t *testing.T) {
	h := testHeader()
	b := make([]byte, 110)
	if err := Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != golden {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, golden)
	}
	MakeReply(b, testCounts)
	if got := hex.EncodeToString(b); got != goldenReply {
		t.Fatalf("reply changed:\n got %s\nwant %s", got, goldenReply)
	}
	var r Header
	if err := Decode(b, &r); err != nil || !r.Reply() || r.Goodbye() || r.Received != 17 || r.Withheld != 5 ||
		r.Legs != testCounts.Legs {
		t.Fatalf("decoded reply %+v, %v", r, err)
	}
}

// TestHelloGolden: a hello is sized for the longest name, and its reply
// carries the reflector's name where the target was, nothing else changed
// but the flags, the counts and the padding; a name that does not fit, or
// is not a name, leaves the hello as it was.
func TestHelloGolden(t *testing.T) {
	h := testHeader()
	h.Flags, h.Seq, h.Target = FlagHello, 0, []byte("10.0.0.2:6464")
	b := make([]byte, HelloSize(len(h.Name), len(h.Target), 0))
	if err := Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != goldenHello {
		t.Fatalf("hello changed:\n got %s\nwant %s", got, goldenHello)
	}
	for _, bad := range []string{"", "no spaces", string(bytes.Repeat([]byte("n"), MaxNameLen+1))} {
		if MakeHelloReply(b, []byte(bad)) || hex.EncodeToString(b) != goldenHello {
			t.Fatalf("a reply naming %q was made", bad)
		}
	}
	short := b[:MinSize(5, 13)]
	Seal(short)
	if MakeHelloReply(short, bytes.Repeat([]byte("n"), 14)) {
		t.Fatal("a reply longer than its hello was made")
	}
	if !MakeHelloReply(b, []byte("node-b")) {
		t.Fatal("no reply")
	}
	if got := hex.EncodeToString(b); got != goldenHelloReply {
		t.Fatalf("hello reply changed:\n got %s\nwant %s", got, goldenHelloReply)
	}
	var r Header
	if err := Decode(b, &r); err != nil || !r.Reply() || !r.Hello() || string(r.Target) != "node-b" || string(r.Name) != "alpha" {
		t.Fatalf("decoded hello reply %+v, %v", r, err)
	}
	long := make([]byte, HelloSize(5, 13, 0))
	if err := Encode(long, &h); err != nil || !MakeHelloReply(long, bytes.Repeat([]byte("n"), MaxNameLen)) {
		t.Fatalf("the longest name does not fit a hello of HelloSize: %v", err)
	}
	old, _ := hex.DecodeString(goldenHelloV4)
	if !MakeHelloReply(old, []byte("node-b")) || hex.EncodeToString(old) != goldenHelloV4Reply {
		t.Fatalf("version-4 hello reply:\n got %x\nwant %s", old, goldenHelloV4Reply)
	}
	if err := Decode(old, &r); err != nil || r.Version != Version4 || string(r.Target) != "node-b" {
		t.Fatalf("decoded version-4 hello reply %+v, %v", r, err)
	}
}

// TestCRC32CKnownAnswer pins the checksum polynomial with the standard check
// value of CRC-32C over "123456789" (RFC 3720, appendix B.4).
func TestCRC32CKnownAnswer(t *testing.T) {
	b := append([]byte("123456789"), 0, 0, 0, 0)
	Seal(b)
	if got := hex.EncodeToString(b[9:]); got != "e3069283" {
		t.Fatalf("CRC-32C(123456789) = %s, want e3069283", got)
	}
}

// TestDecodeGolden decodes the golden datagram of each version and answers
// it in its version: a version-4 reply has no legs, a version-2 one no
// withheld count either and a version-1 one no target either, so receivers
// keep serving senders of the previous versions.
func TestDecodeGolden(t *testing.T) {
	for _, g := range []struct {
		datagram, reply string
		version         uint8
		target          []byte
	}{
		{golden, goldenReply, 5, []byte("rx:6464")},
		{goldenV4, goldenV4Reply, 4, []byte("rx:6464")},
		{goldenV3, goldenV3Reply, 3, []byte("rx:6464")},
		{goldenV2, goldenV2Reply, 2, []byte("rx:6464")},
		{goldenV1, goldenV1Reply, 1, nil},
	} {
		b, _ := hex.DecodeString(g.datagram)
		var h Header
		if err := Decode(b, &h); err != nil {
			t.Fatal(err)
		}
		want := testHeader()
		if h.Session != want.Session || h.Seq != want.Seq || h.SendTime != want.SendTime || h.Version != g.version ||
			h.SendClock != want.SendClock || h.Received != 0 || !bytes.Equal(h.Name, want.Name) ||
			!bytes.Equal(h.Target, g.target) || h.Flags != 0 || h.TagLen != 0 {
			t.Fatalf("version %d: decoded %+v, want %+v", g.version, h, want)
		}
		if g.version < Version {
			want.TrafficClass, want.HopLimit, want.Clock, want.Flow = 0, 0, 0, 0
		}
		if h.TrafficClass != want.TrafficClass || h.HopLimit != want.HopLimit || h.Clock != want.Clock || h.Flow != want.Flow {
			t.Fatalf("version %d: decoded %+v, want %+v", g.version, h, want)
		}
		MakeReply(b, testCounts)
		if got := hex.EncodeToString(b); got != g.reply {
			t.Fatalf("version %d reply:\n got %s\nwant %s", g.version, got, g.reply)
		}
	}
}

func TestRoundTripPatched(t *testing.T) {
	h := testHeader()
	b := make([]byte, 200)
	if err := Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	PutSeq(b, 7)
	PutSendTime(b, -5, -6)
	PutFlags(b, FlagGoodbye)
	PutClock(b, 0x1234)
	Seal(b)
	var d Header
	if err := Decode(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Seq != 7 || d.SendTime != -5 || d.SendClock != -6 || !d.Goodbye() || string(d.Name) != "alpha" ||
		d.Clock != 0x1234 || d.TrafficClass != h.TrafficClass || d.HopLimit != h.HopLimit || d.Flow != h.Flow {
		t.Fatalf("decoded %+v", d)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := bytes.Repeat([]byte("a"), MaxNameLen+1)
	for _, tc := range []struct {
		name string
		h    Header
		size int
		want error
	}{
		{"empty name", Header{}, 64, ErrName},
		{"long name", Header{Name: long}, 200, ErrName},
		{"space in name", Header{Name: []byte("a b")}, 64, ErrName},
		{"unknown flag", Header{Name: []byte("a"), Flags: 0x80}, 64, ErrHeader},
		{"tag too long", Header{Name: []byte("a"), TagLen: MaxTagLen + 1}, 200, ErrHeader},
		{"too small", Header{Name: []byte("abc")}, MinSize(3, 0) - 1, ErrTooShort},
		{"no room for target", Header{Name: []byte("abc"), Target: []byte("b:1")}, MinSize(3, 3) - 1, ErrTooShort},
		{"no room for tag", Header{Name: []byte("abc"), TagLen: 16}, MinSize(3, 0) + 15, ErrTooShort},
		{"long target", Header{Name: []byte("a"), Target: bytes.Repeat([]byte("t"), MaxTargetLen+1)}, 400, ErrName},
		{"space in target", Header{Name: []byte("a"), Target: []byte("b :1")}, 64, ErrName},
		{"too large", Header{Name: []byte("a")}, MaxSize + 1, ErrTooShort},
		{"sequence top bit", Header{Name: []byte("a"), Seq: MaxSeq + 1}, 64, ErrHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Encode(make([]byte, tc.size), &tc.h); !errors.Is(err, tc.want) {
				t.Fatalf("Encode = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := func() []byte {
		b, _ := hex.DecodeString(golden)
		return b
	}
	resealed := func(f func(b []byte)) []byte {
		b := valid()
		f(b)
		Seal(b)
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTooShort},
		{"one short", valid()[:MinDatagram-1], ErrTooShort},
		{"foreign", []byte("GET / HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n0123456789"), ErrMagic},
		{"zeros", make([]byte, 64), ErrMagic},
		{"future version", resealed(func(b []byte) { b[4] = 7 }), ErrVersion},
		{"version 6", resealed(func(b []byte) { b[4] = 6 }), ErrVersion},
		{"a hello in version 3", resealed(func(b []byte) { b[4], b[5] = 3, byte(FlagHello) }), ErrHeader},
		{"bit error in magic", func() []byte { b := valid(); b[1] ^= 0x10; return b }(), ErrChecksum},
		{"bit error in version", func() []byte { b := valid(); b[4] ^= 0x02; return b }(), ErrChecksum},
		{"bit error in sequence", func() []byte { b := valid(); b[23] ^= 1; return b }(), ErrChecksum},
		{"bit error in target", func() []byte { b := valid(); b[56] ^= 0x80; return b }(), ErrChecksum},
		{"bit error in withheld count", func() []byte { b := valid(); b[62] ^= 0x80; return b }(), ErrChecksum},
		{"bit error in reply number", func() []byte { b := valid(); b[84] ^= 0x01; return b }(), ErrChecksum},
		{"bit error in traffic class", func() []byte { b := valid(); b[93] ^= 0x04; return b }(), ErrChecksum},
		{"bit error in padding", func() []byte { b := valid(); b[101] ^= 0x80; return b }(), ErrChecksum},
		{"bit error in send clock", func() []byte { b := valid(); b[35] ^= 4; return b }(), ErrChecksum},
		{"bit error in checksum", func() []byte { b := valid(); b[109] ^= 1; return b }(), ErrChecksum},
		{"truncated", valid()[:109], ErrChecksum},
		{"unknown flag", resealed(func(b []byte) { b[5] = 0x40 }), ErrHeader},
		{"name overruns", resealed(func(b []byte) { b[6] = 20 }), ErrHeader},
		{"name too long", resealed(func(b []byte) { b[6] = MaxNameLen + 1 }), ErrHeader},
		{"tag overruns", resealed(func(b []byte) { b[7] = 8 }), ErrHeader},
		{"target overruns", resealed(func(b []byte) { b[53] = 20 }), ErrHeader},
		{"no room for the counts", resealed(func(b []byte) { b[53] = 15 }), ErrHeader},
		{"bad target byte", resealed(func(b []byte) { b[55] = '"' }), ErrName},
		{"sequence top bit", resealed(func(b []byte) { b[16] |= 0x80 }), ErrHeader},
		{"empty name", resealed(func(b []byte) { b[6] = 0 }), ErrHeader},
		{"bad name byte", resealed(func(b []byte) { b[49] = ' ' }), ErrName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Header
			if err := Decode(tc.b, &h); !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNoAllocs(t *testing.T) {
	h := testHeader()
	b := make([]byte, 110)
	var d Header
	allocs := testing.AllocsPerRun(100, func() {
		_ = Encode(b, &h)
		PutSeq(b, 9)
		Seal(b)
		_ = Decode(b, &d)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per encode+decode, want 0", allocs)
	}
}

// FuzzDecode checks that Decode never panics, rejects only with the errors
// the receiver has a counter for, and that whatever it accepts encodes back
// to a datagram that decodes to the same header; and that Verify, on what
// Decode accepts, either authenticates under one of its keys or says
// ErrAuth. The seed corpus is in testdata/fuzz/FuzzDecode: every kind of
// rejection, signed and unsigned datagrams, the largest sequence number.
func FuzzDecode(f *testing.F) {
	for _, g := range []string{golden, goldenReply, goldenV4, goldenV3, goldenV2, goldenV1, goldenHello, goldenHelloReply} {
		b, _ := hex.DecodeString(g)
		f.Add(b)
	}
	known := []error{ErrTooShort, ErrMagic, ErrVersion, ErrHeader, ErrName, ErrChecksum}
	auth, err := NewAuth([][]byte{[]byte(goldenKey), []byte("a second key, for rotation")})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		if err := Decode(b, &h); err != nil {
			if !slices.Contains(known, err) {
				t.Fatalf("Decode(%x) = %v, an error without a counter", b, err)
			}
			return
		}
		if i, err := auth.Verify(b); (err == nil) != (i == 0 || i == 1) || (err != nil && err != ErrAuth) {
			t.Fatalf("Verify(%x) = %d, %v", b, i, err)
		}
		// A version-1 datagram re-encodes as version 2, a byte longer.
		again := make([]byte, max(len(b), MinSize(len(h.Name), len(h.Target))+int(h.TagLen)))
		if err := Encode(again, &h); err != nil {
			t.Fatalf("accepted %x but cannot re-encode: %v", b, err)
		}
		var h2 Header
		if err := Decode(again, &h2); err != nil {
			t.Fatalf("re-encoded datagram rejected: %v", err)
		}
		if h2.Flags != h.Flags || h2.TagLen != h.TagLen || h2.Session != h.Session ||
			h2.Seq != h.Seq || h2.SendTime != h.SendTime || !bytes.Equal(h2.Name, h.Name) || !bytes.Equal(h2.Target, h.Target) || h2.Withheld != h.Withheld {
			t.Fatalf("round trip changed %+v into %+v", h, h2)
		}
		// Any accepted datagram answered as a hello gives either no reply,
		// or one of its length that decodes, naming the reflector.
		reply := bytes.Clone(b)
		if MakeHelloReply(reply, []byte("node-b")) {
			var r Header
			if err := Decode(reply, &r); err != nil || string(r.Target) != "node-b" || !r.Reply() || len(reply) != len(b) {
				t.Fatalf("hello reply to %x: %x, %+v, %v", b, reply, r, err)
			}
		} else if !bytes.Equal(reply, b) {
			t.Fatalf("no hello reply to %x, yet it changed", b)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	h := testHeader()
	buf := make([]byte, 110)
	_ = Encode(buf, &h)
	var d Header
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := Decode(buf, &d); err != nil {
			b.Fatal(err)
		}
	}
}

// goldenKey and goldenSigned: testHeader encoded into 126 bytes with a tag,
// signed under goldenKey. The tag and the checksum came from Python's hmac
// and hashlib and a bitwise CRC-32C, not from this package.
const (
	goldenKey    = "an example key, 32 bytes long!!!"
	goldenSigned = "55445050" + "05" + "00" + "05" + "10" + // tag length 16
		"0102030405060708" + "000000000000002a" + "17979cfe3d85cd15" + "00000000075bcd15" +
		"0000000000000000" + "616c706861" + "07" + "72783a36343634" + "0000000000000000" +
		"000000000000000000000000000000000000000000000000" + "b9408a050003" + "00000000000000" + // the legs, the probe's fields and the padding
		"0d78bf48d43eb2bee6b4bc5f2b43a3a2" + // HMAC-SHA-256 of the 106 bytes before it, first 16 bytes
		"12f93b80" // CRC-32C of the 122 bytes before it
)

// signed encodes testHeader with a tag and signs it under key i of a.
func signed(t testing.TB, a *Auth, i int) []byte {
	t.Helper()
	h := testHeader()
	h.TagLen = TagSize
	b := make([]byte, 126)
	if err := Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	a.Sign(b, i)
	return b
}

func TestAuthGolden(t *testing.T) {
	a, err := NewAuth([][]byte{[]byte(goldenKey)})
	if err != nil {
		t.Fatal(err)
	}
	b := signed(t, a, 0)
	if got := hex.EncodeToString(b); got != goldenSigned {
		t.Fatalf("signed datagram changed:\n got %s\nwant %s", got, goldenSigned)
	}
	var h Header
	if err := Decode(b, &h); err != nil || h.TagLen != TagSize || string(h.Name) != "alpha" {
		t.Fatalf("decoded %+v, %v", h, err)
	}
	if i, err := a.Verify(b); i != 0 || err != nil {
		t.Fatalf("Verify: key %d, %v", i, err)
	}
}

// TestAuthRejects: a datagram without a tag, with a tag of another length,
// signed under another key, or changed after signing (the checksum
// resealed, as an attacker would) is not authenticated; every bit of the
// signed bytes and of the tag counts.
func TestAuthRejects(t *testing.T) {
	key := []byte(goldenKey)
	a, _ := NewAuth([][]byte{key})
	other, _ := NewAuth([][]byte{[]byte("another key of at least 16 bytes")})
	if _, err := a.Verify(signed(t, other, 0)); !errors.Is(err, ErrAuth) {
		t.Fatalf("a datagram signed under another key: %v", err)
	}
	plain := make([]byte, 64)
	h := testHeader()
	Encode(plain, &h)
	if _, err := a.Verify(plain); !errors.Is(err, ErrAuth) {
		t.Fatalf("a datagram without a tag: %v", err)
	}
	h.TagLen = 20
	long := make([]byte, 84)
	Encode(long, &h)
	if _, err := a.Verify(long); !errors.Is(err, ErrAuth) {
		t.Fatalf("a datagram with a 20-byte tag: %v", err)
	}
	good := signed(t, a, 0)
	for bit := range (len(good) - TrailerSize) * 8 {
		b := bytes.Clone(good)
		b[bit/8] ^= 1 << (bit % 8)
		Seal(b)
		if i, err := a.Verify(b); err == nil {
			t.Fatalf("bit %d flipped: still authenticated by key %d", bit, i)
		}
	}
}

// TestAuthRotation: with two keys, a datagram signed under either verifies
// and names its key; replies can be signed under the key that verified.
func TestAuthRotation(t *testing.T) {
	oldKey, newKey := []byte("the old key, 16+ bytes"), []byte("the new key, 16+ bytes")
	both, err := NewAuth([][]byte{newKey, oldKey})
	if err != nil {
		t.Fatal(err)
	}
	oldOnly, _ := NewAuth([][]byte{oldKey})
	newOnly, _ := NewAuth([][]byte{newKey})
	for want, a := range []*Auth{newOnly, oldOnly} {
		b := signed(t, a, 0)
		if i, err := both.Verify(b); i != want || err != nil {
			t.Fatalf("signed under key %d: verified as %d, %v", want, i, err)
		}
		MakeReply(b, Counts{Received: 1})
		both.Sign(b, want)
		if _, err := a.Verify(b); err != nil {
			t.Fatalf("the reply to key %d's sender: %v", want, err)
		}
	}
}

func TestNewAuthChecksKeys(t *testing.T) {
	k := bytes.Repeat([]byte("k"), MinKeyLen)
	for name, keys := range map[string][][]byte{
		"no key":          nil,
		"a short key":     {k[:MinKeyLen-1]},
		"a long key":      {bytes.Repeat(k, MaxKeyLen)},
		"a short 2nd key": {k, k[:1]},
		"three keys":      {k, k, k},
	} {
		if _, err := NewAuth(keys); err == nil {
			t.Errorf("NewAuth accepted %s", name)
		}
	}
}

func TestAuthAllocatesNothing(t *testing.T) {
	a, _ := NewAuth([][]byte{[]byte(goldenKey), []byte("a second key, for rotation")})
	b := signed(t, a, 1)
	allocs := testing.AllocsPerRun(100, func() {
		a.Sign(b, 1)
		if i, err := a.Verify(b); i != 1 || err != nil {
			t.Fatal(i, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per sign and verify", allocs)
	}
}

// BenchmarkAuth is what authentication adds per datagram at the receiver:
// verifying under the first of two keys.
func BenchmarkAuth(b *testing.B) {
	a, _ := NewAuth([][]byte{[]byte(goldenKey)})
	d := signed(b, a, 0)
	for b.Loop() {
		if _, err := a.Verify(d); err != nil {
			b.Fatal(err)
		}
	}
}
