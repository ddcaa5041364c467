package stamp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// golden is testdata/golden.json, made by testdata/golden.py.
type golden struct {
	Key     string `json:"key"`
	Packets []struct {
		Kind          string `json:"kind"`
		Name          string `json:"name"`
		Authenticated bool   `json:"authenticated"`
		Fields        struct {
			Seq                 uint32 `json:"seq"`
			Timestamp           uint64 `json:"timestamp"`
			ErrorEstimate       uint16 `json:"error_estimate"`
			SSID                uint16 `json:"ssid"`
			ReceiveTimestamp    uint64 `json:"receive_timestamp"`
			SenderSeq           uint32 `json:"sender_seq"`
			SenderTimestamp     uint64 `json:"sender_timestamp"`
			SenderErrorEstimate uint16 `json:"sender_error_estimate"`
			SenderTTL           uint8  `json:"sender_ttl"`
			TLVs                []struct {
				Flags uint8  `json:"flags"`
				Type  uint8  `json:"type"`
				Value string `json:"value"`
			} `json:"tlvs"`
		} `json:"fields"`
		Hex string `json:"hex"`
	} `json:"packets"`
}

func readGolden(t *testing.T) (*golden, []byte) {
	t.Helper()
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g, b
}

// TestGolden: every packet scapy (and, for the authenticated ones, the
// script's own layout from the RFC) made decodes to the fields it was made
// from, and encoding those fields gives the same bytes.
func TestGolden(t *testing.T) {
	g, _ := readGolden(t)
	auth, err := NewAuth([][]byte{[]byte(g.Key)})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range g.Packets {
		t.Run(p.Kind+" "+p.Name, func(t *testing.T) {
			wire, err := hex.DecodeString(p.Hex)
			if err != nil {
				t.Fatal(err)
			}
			var a *Auth
			if p.Authenticated {
				a = auth
			}
			f := p.Fields
			var tlvs []TLV
			for _, v := range f.TLVs {
				b, err := hex.DecodeString(v.Value)
				if err != nil {
					t.Fatal(err)
				}
				tlvs = append(tlvs, TLV{Flags: v.Flags, Type: v.Type, Value: b})
			}
			var enc []byte
			switch p.Kind {
			case "test":
				want := Test{Seq: f.Seq, Timestamp: Timestamp(f.Timestamp), ErrorEstimate: ErrorEstimate(f.ErrorEstimate),
					SSID: f.SSID, TLVs: tlvs}
				var got Test
				if err := DecodeTest(wire, &got, a); err != nil || !equalTest(got, want) {
					t.Errorf("decoded %+v, %v; want %+v", got, err, want)
				}
				enc = want.Append(nil, a)
			case "reflected":
				want := Reflected{Seq: f.Seq, Timestamp: Timestamp(f.Timestamp), ErrorEstimate: ErrorEstimate(f.ErrorEstimate),
					SSID: f.SSID, ReceiveTimestamp: Timestamp(f.ReceiveTimestamp), SenderSeq: f.SenderSeq,
					SenderTimestamp: Timestamp(f.SenderTimestamp), SenderErrorEstimate: ErrorEstimate(f.SenderErrorEstimate),
					SenderTTL: f.SenderTTL, TLVs: tlvs}
				var got Reflected
				if err := DecodeReflected(wire, &got, a); err != nil || !equalReflected(got, want) {
					t.Errorf("decoded %+v, %v; want %+v", got, err, want)
				}
				enc = want.Append(nil, a)
			default:
				t.Fatalf("kind %q", p.Kind)
			}
			if !bytes.Equal(enc, wire) {
				t.Errorf("encoded\n%x\nwant\n%x", enc, wire)
			}
		})
		kinds[p.Kind+map[bool]string{true: " authenticated", false: ""}[p.Authenticated]]++
	}
	if len(kinds) != 4 {
		t.Fatalf("golden packets of %v: want test and reflected, each in both modes", kinds)
	}
}

func equalTest(a, b Test) bool {
	ta, tb := a.TLVs, b.TLVs
	a.TLVs, b.TLVs = nil, nil
	return reflect.DeepEqual(a, b) && equalTLVs(ta, tb)
}

func equalReflected(a, b Reflected) bool {
	ta, tb := a.TLVs, b.TLVs
	a.TLVs, b.TLVs = nil, nil
	return reflect.DeepEqual(a, b) && equalTLVs(ta, tb)
}

func equalTLVs(a, b []TLV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Flags != b[i].Flags || a[i].Type != b[i].Type || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// TestGoldenScript: the script makes the golden file as committed, with
// the scapy installed here. In CI a missing scapy fails the test (.ci/run
// installs python3-scapy).
func TestGoldenScript(t *testing.T) {
	py := testproc.RequirePython(t, "scapy.contrib.stamp", "python3-scapy")
	out, err := exec.Command(py, "testdata/golden.py").Output()
	if err != nil {
		t.Fatalf("golden.py: %v", err)
	}
	_, committed := readGolden(t)
	if !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(committed)) {
		t.Fatal("testdata/golden.py makes a different golden.json: run it again and commit its output")
	}
}

func TestNTP(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want Timestamp
	}{
		{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), 0},
		{time.Date(2025, 11, 30, 0, 0, 0, 250_000_000, time.UTC), 3973449600<<32 | 1<<30},
		{time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC), 0}, // era 1 starts
		{time.Date(2040, 1, 1, 0, 0, 0, 500_000_000, time.UTC), Timestamp(uint64(123010304)<<32 | 1<<31)},
	} {
		if got := NTP(tc.t); got != tc.want {
			t.Errorf("NTP(%v) = %#x, want %#x", tc.t, uint64(got), uint64(tc.want))
		}
	}
	// Round trips within the 2^-32 s resolution, both eras.
	for _, at := range []time.Time{time.Date(2026, 12, 1, 22, 0, 0, 123456789, time.UTC),
		time.Date(2037, 3, 1, 0, 0, 0, 999999999, time.UTC)} {
		if d := at.Sub(NTP(at).Time()); d < 0 || d > time.Nanosecond {
			t.Errorf("%v round-trips to %v", at, NTP(at).Time())
		}
	}
}

func TestEstimate(t *testing.T) {
	for _, tc := range []struct {
		sync bool
		max  time.Duration
		want ErrorEstimate
	}{
		{true, 0, 0x8001},                   // the least error there is: 1 × 2^-32 s
		{false, time.Second, 25<<8 | 128},   // 128 × 2^(25-32) s
		{true, time.Millisecond, 0x8F84},    // 132 × 2^(15-32) s = 1.0071 ms
		{false, math.MaxInt64, 58<<8 | 138}, // the longest duration: 138 × 2^26 s
	} {
		got := Estimate(tc.sync, tc.max)
		if got != tc.want || got.Synchronised() != tc.sync || got.PTP() {
			t.Errorf("Estimate(%v, %v) = %#x, want %#x", tc.sync, tc.max, uint16(got), uint16(tc.want))
		}
	}
	// The estimate is never below the error and at most one multiplier
	// step (1/128 of it, or 2^-32 s) above.
	for _, d := range []time.Duration{1, 999, 1234567, 16 * time.Millisecond, 3 * time.Second, 1000 * time.Hour} {
		e := Estimate(false, d)
		if got := e.Error(); got < d || float64(got-d) > float64(d)/128+1 {
			t.Errorf("Estimate(%v) reads %v (%#x)", d, got, uint16(e))
		}
		if m, scale := e&0xFF, e>>8&0x3F; m == 0 || scale > 0 && m < 128 {
			t.Errorf("Estimate(%v) = %#x: multiplier %d at scale %d, not the smallest scale", d, uint16(e), m, scale)
		}
	}
}

// TestTWAMPLight: a TWAMP-Light probe shorter than STAMP's base decodes
// with the fields it lacks zero; anything shorter than its 14 octets, or an
// authenticated packet short of 112, does not.
func TestTWAMPLight(t *testing.T) {
	b := []byte{0, 0, 0, 9, 0xEC, 0xD6, 0x07, 0x80, 0, 0, 0, 0, 0x80, 0x01, 0xAA} // 15 octets
	var got Test
	if err := DecodeTest(b, &got, nil); err != nil || got.Seq != 9 || got.Timestamp != 0xECD6078000000000 ||
		got.ErrorEstimate != 0x8001 || got.SSID != 0xAA00 || len(got.TLVs) != 0 || got.Malformed {
		t.Errorf("15 octets: %+v, %v", got, err)
	}
	if err := DecodeTest(b[:MinTestSize-1], &got, nil); !errors.Is(err, ErrTooShort) {
		t.Errorf("13 octets: %v", err)
	}
	a, _ := NewAuth([][]byte{[]byte("0123456789abcdef")})
	if err := DecodeTest(make([]byte, AuthBaseSize-1), &got, a); !errors.Is(err, ErrTooShort) {
		t.Errorf("111 octets authenticated: %v", err)
	}
}

// TestTLVBounds: TLVs that run past the end, a stray byte, or more than
// MaxTLVs mark the packet malformed and keep those before the fault.
func TestTLVBounds(t *testing.T) {
	base := (&Test{Seq: 1}).Append(nil, nil)
	tlv := func(n int) []byte { return append([]byte{0, 1, byte(n >> 8), byte(n)}, make([]byte, n)...) }
	for _, tc := range []struct {
		name      string
		rest      []byte
		tlvs      int
		malformed bool
	}{
		{"none", nil, 0, false},
		{"two", append(tlv(3), tlv(0)...), 2, false},
		{"a stray byte", append(tlv(2), 0), 1, true},
		{"a length past the end", append(tlv(1), 0, 1, 0, 9, 1, 2), 1, true},
		{"too many", bytes.Repeat(tlv(0), MaxTLVs+1), MaxTLVs, true},
	} {
		var got Test
		if err := DecodeTest(append(slicesClone(base), tc.rest...), &got, nil); err != nil ||
			len(got.TLVs) != tc.tlvs || got.Malformed != tc.malformed {
			t.Errorf("%s: %d TLVs, malformed %v, %v; want %d, %v", tc.name, len(got.TLVs), got.Malformed, err, tc.tlvs, tc.malformed)
		}
	}
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

// TestAuth: a changed bit or another key fails; during a rotation either
// key verifies and the first signs.
func TestAuth(t *testing.T) {
	old, next := []byte("the old key, 16+ octets"), []byte("the next key, 16+ octets")
	a, _ := NewAuth([][]byte{old})
	p := (&Reflected{Seq: 5, SenderSeq: 7}).Append(nil, a)
	var r Reflected
	if err := DecodeReflected(p, &r, a); err != nil || r.Seq != 5 || r.SenderSeq != 7 {
		t.Fatalf("%+v, %v", r, err)
	}
	for i := range hmacAt {
		q := slicesClone(p)
		q[i] ^= 1
		if err := DecodeReflected(q, &r, a); !errors.Is(err, ErrAuth) {
			t.Fatalf("octet %d changed: %v", i, err)
		}
	}
	rotating, _ := NewAuth([][]byte{next, old})
	if err := DecodeReflected(p, &r, rotating); err != nil {
		t.Errorf("the old key during a rotation: %v", err)
	}
	if err := DecodeReflected((&Reflected{}).Append(nil, rotating), &r, a); !errors.Is(err, ErrAuth) {
		t.Errorf("signed with the next key, verified with the old alone: %v", err)
	}
	if _, err := NewAuth([][]byte{[]byte("short")}); err == nil {
		t.Error("a 5-octet key accepted")
	}
}

// TestClassOfService: the golden reflected packet's CoS TLV reads DSCP1
// 46, DSCP2 10, ECN 1, and writing those gives its value back.
func TestClassOfService(t *testing.T) {
	want := ClassOfService{DSCP1: 46, DSCP2: 10, ECN: 1}
	v := want.Value()
	got, ok := ParseClassOfService(v[:])
	if !ok || got != want || v != [4]byte{46<<2 | 10>>4, (10&0xF)<<4 | 1<<2, 0, 0} {
		t.Errorf("%+v → %x → %+v", want, v, got)
	}
	for d := range uint8(64) {
		for e := range uint8(4) {
			c := ClassOfService{DSCP1: 63 - d, DSCP2: d, ECN: e, RP: 3 - e}
			v := c.Value()
			if got, _ := ParseClassOfService(v[:]); got != c {
				t.Fatalf("%+v round-trips to %+v", c, got)
			}
		}
	}
	if _, ok := ParseClassOfService(make([]byte, 3)); ok {
		t.Error("a 3-octet value parsed")
	}
}

// TestDecodeAllocatesNothing: decoding into a struct whose TLV slice has
// room, authenticated or not, allocates nothing.
func TestDecodeAllocatesNothing(t *testing.T) {
	a, _ := NewAuth([][]byte{[]byte("0123456789abcdef")})
	tlvs := []TLV{{Type: TypeExtraPadding, Value: make([]byte, 20)}}
	plainP, signedP := (&Test{TLVs: tlvs}).Append(nil, nil), (&Test{TLVs: tlvs}).Append(nil, a)
	r := Test{TLVs: make([]TLV, 0, MaxTLVs)}
	if n := testing.AllocsPerRun(100, func() {
		DecodeTest(plainP, &r, nil)
		DecodeTest(signedP, &r, a)
	}); n != 0 {
		t.Errorf("%v allocations a decode", n)
	}
}

// FuzzDecode: no input panics or reads past its end, and what decodes
// encodes back to the same base fields.
func FuzzDecode(f *testing.F) {
	g, _ := readGoldenF(f)
	for _, p := range g.Packets {
		b, _ := hex.DecodeString(p.Hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var tp Test
		if DecodeTest(b, &tp, nil) == nil {
			var again Test
			if err := DecodeTest(tp.Append(nil, nil), &again, nil); err != nil || again.Seq != tp.Seq ||
				again.Timestamp != tp.Timestamp || again.SSID != tp.SSID || len(again.TLVs) != len(tp.TLVs) {
				t.Fatalf("%x: %+v then %+v, %v", b, tp, again, err)
			}
		}
		var r Reflected
		_ = DecodeReflected(b, &r, nil)
	})
}

func readGoldenF(f *testing.F) (*golden, error) {
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		f.Fatal(err)
	}
	var g golden
	return &g, json.Unmarshal(b, &g)
}

// TestRestamp: a packet restamped with a number, a time and an estimate
// decodes to them, in both modes, and authenticated its HMAC verifies;
// its TLVs are untouched.
func TestRestamp(t *testing.T) {
	a, _ := NewAuth([][]byte{[]byte("0123456789abcdef")})
	for _, auth := range []*Auth{nil, a} {
		p := (&Test{SSID: 9, TLVs: []TLV{{Type: TypeExtraPadding, Value: []byte{1, 2, 3}}}}).Append(nil, auth)
		ts := NTP(time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC))
		Restamp(p, 77, ts, 0x8123, auth)
		var got Test
		if err := DecodeTest(p, &got, auth); err != nil || got.Seq != 77 || got.Timestamp != ts || got.ErrorEstimate != 0x8123 ||
			got.SSID != 9 || len(got.TLVs) != 1 || !bytes.Equal(got.TLVs[0].Value, []byte{1, 2, 3}) {
			t.Errorf("authenticated %v: %+v, %v", auth != nil, got, err)
		}
	}
}
