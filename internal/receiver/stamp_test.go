package receiver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
)

// stampTable is a table that reflects STAMP, with the replies it sent.
func stampTable(t *testing.T, opts Options, keys [][]byte) (*testTable, *replies) {
	t.Helper()
	if opts.ReflectRate == 0 {
		opts.ReflectRate = 1e6 // no limit a test reaches
	}
	tt := newTable(t, opts)
	var r replies
	if err := tt.EnableSTAMP(keys, r.sendSTAMP); err != nil {
		t.Fatal(err)
	}
	return tt, &r
}

var stampFrom = netip.MustParseAddrPort("198.51.100.7:40001")

// stampProbe is test packet seq of SSID 17, sent at seq ms after wall0.
func stampProbe(seq uint32, a *stamp.Auth, tlvs ...stamp.TLV) []byte {
	p := stamp.Test{Seq: seq, Timestamp: stamp.NTP(time.Unix(0, wall0+int64(seq)*1e6)),
		ErrorEstimate: stamp.Estimate(true, time.Millisecond), SSID: 17, TLVs: tlvs}
	return p.Append(nil, a)
}

// stampSeries is the series of a receiver metric for the STAMP session.
func stampSeries(t *testing.T, tt *testTable, name string) float64 {
	t.Helper()
	s, err := scrape.Gather(tt.reg)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := s.Value(scrape.Series("udpprobe_receiver_"+name, "sender", stampFrom.String(), "target", "stamp:17"))
	if !ok {
		t.Fatalf("no %s for the STAMP session", name)
	}
	return v
}

// TestSTAMPReflector: a STAMP session is a peer like any other, its losses,
// reordering and duplicates counted by the same rules, and each reply
// carries the reflector's own number (stateful: how many replies the
// session had been sent), its timestamps, and what it received.
func TestSTAMPReflector(t *testing.T) {
	tt, r := stampTable(t, Options{}, nil)
	tt.SetClock(true, 2*time.Millisecond)
	traffic := Traffic{TTL: 61, TOS: 46<<2 | 1, HasTTL: true, HasTOS: true}
	// Sequence numbers as they arrive: 3 and 7 never do, 5 comes twice,
	// 6 before 4 and 5, which are both reordered (RFC 4737).
	order := []uint32{0, 1, 2, 6, 4, 5, 5, 8, 9}
	var got []stamp.Reflected
	for i, seq := range order {
		arrived := at(float64(seq) + 1) // 1 ms after it was sent
		now := arrived.Wall + 50_000    // replied 50 µs later
		b := stampProbe(seq, nil)
		tt.HandleSTAMP(b, stampFrom, arrived, traffic, now)
		if r.n != len(got)+1 && seq != 5 || r.to != stampFrom && r.n > 0 {
			t.Fatalf("after probe %d (seq %d): %d replies, last to %v", i, seq, r.n, r.to)
		}
		if r.n == len(got) {
			continue // the duplicate is not answered
		}
		var rep stamp.Reflected
		if err := stamp.DecodeReflected(r.last[:r.size], &rep, nil); err != nil || r.size != len(b) {
			t.Fatalf("reply to %d: %v, %d octets for a probe of %d", seq, err, r.size, len(b))
		}
		if rep.ReceiveTimestamp != stamp.NTP(time.Unix(0, arrived.Wall)) || rep.Timestamp != stamp.NTP(time.Unix(0, now)) ||
			rep.SenderSeq != seq || rep.SenderTimestamp != stamp.NTP(time.Unix(0, wall0+int64(seq)*1e6)) ||
			rep.SSID != 17 || rep.SenderTTL != 61 || rep.SenderErrorEstimate != stamp.Estimate(true, time.Millisecond) ||
			!rep.ErrorEstimate.Synchronised() || rep.ErrorEstimate.Error() < 2*time.Millisecond {
			t.Errorf("reply to %d: %+v", seq, rep)
		}
		got = append(got, rep)
	}
	for i, rep := range got {
		if rep.Seq != uint32(i) {
			t.Errorf("reply %d carries the reflector's number %d", i, rep.Seq)
		}
	}
	tt.Housekeep(at(1000)) // past every loss timeout
	for name, want := range map[string]float64{"packets_received_total": 8, "packets_lost_total": 2,
		"packets_duplicated_total": 1, "packets_reordered_total": 2, "replies_sent_total": 8} {
		if v := stampSeries(t, tt, name); v != want {
			t.Errorf("%s %v, want %v", name, v, want)
		}
	}
	if n := stampSeries(t, tt, "one_way_delay_seconds_count"); n != 8 {
		t.Errorf("%v one-way delays, want 8", n)
	}
}

// TestSTAMPTLVs: the reply carries the probe's TLVs back, as long as it
// came: Extra Padding as it was, Class of Service with the DSCP and ECN the
// probe arrived with, a type the reflector does not know with the U flag,
// and a malformed tail as it came.
func TestSTAMPTLVs(t *testing.T) {
	tt, r := stampTable(t, Options{}, nil)
	cos := stamp.ClassOfService{DSCP1: 10}.Value()
	probe := stampProbe(0, nil,
		stamp.TLV{Type: stamp.TypeExtraPadding, Value: make([]byte, 30)},
		stamp.TLV{Type: stamp.TypeClassOfService, Value: cos[:]},
		stamp.TLV{Type: 200, Value: []byte{1, 2, 3}})
	probe = append(probe, 0, 1, 0) // a tail that is no TLV
	sent := bytes.Clone(probe)
	tt.HandleSTAMP(probe, stampFrom, at(1), Traffic{TOS: 34<<2 | 3, HasTOS: true}, at(1).Wall)
	var rep stamp.Reflected
	if err := stamp.DecodeReflected(r.last[:r.size], &rep, nil); err != nil || r.size != len(sent) || len(rep.TLVs) != 3 || !rep.Malformed {
		t.Fatalf("%d octets for %d, %v: %+v", r.size, len(sent), err, rep)
	}
	if p := rep.TLVs[0]; p.Flags != 0 || len(p.Value) != 30 {
		t.Errorf("padding came back as %+v", p)
	}
	if c, ok := stamp.ParseClassOfService(rep.TLVs[1].Value); !ok || c != (stamp.ClassOfService{DSCP1: 10, DSCP2: 34, ECN: 3}) || rep.TLVs[1].Flags != 0 {
		t.Errorf("class of service came back as %+v (flags %#x)", c, rep.TLVs[1].Flags)
	}
	if u := rep.TLVs[2]; u.Flags != stamp.FlagUnrecognized || u.Type != 200 || !bytes.Equal(u.Value, []byte{1, 2, 3}) {
		t.Errorf("the unknown TLV came back as %+v", u)
	}
	if !bytes.Equal(r.last[r.size-3:r.size], []byte{0, 1, 0}) {
		t.Errorf("the tail came back as %x", r.last[r.size-3:r.size])
	}
	if rep.SenderTTL != 255 {
		t.Errorf("sender TTL %d with none read, want 255", rep.SenderTTL)
	}
	if r.tc != 10<<2 {
		t.Errorf("the reply leaves with traffic class %#x, want DSCP1 10 (%#x)", r.tc, 10<<2)
	}
	tt.HandleSTAMP(stampProbe(1, nil), stampFrom, at(2), Traffic{TOS: 34 << 2, HasTOS: true}, at(2).Wall)
	if r.tc != -1 {
		t.Errorf("a reply without a Class of Service TLV leaves with traffic class %d, want the socket's (-1)", r.tc)
	}
}

// TestSTAMPAuthenticated: in authenticated mode replies are signed, and a
// probe signed with another key, or unsigned, is counted and not answered.
func TestSTAMPAuthenticated(t *testing.T) {
	key := []byte("the reflector's STAMP key")
	tt, r := stampTable(t, Options{}, [][]byte{key})
	a, _ := stamp.NewAuth([][]byte{key})
	other, _ := stamp.NewAuth([][]byte{[]byte("somebody else's STAMP key")})
	tt.HandleSTAMP(stampProbe(0, a), stampFrom, at(1), Traffic{}, at(1).Wall)
	var rep stamp.Reflected
	if r.n != 1 || stamp.DecodeReflected(r.last[:r.size], &rep, a) != nil || r.size != stamp.AuthBaseSize {
		t.Fatalf("%d replies, %d octets", r.n, r.size)
	}
	tt.HandleSTAMP(stampProbe(1, other), stampFrom, at(2), Traffic{}, at(2).Wall)
	tt.HandleSTAMP(stampProbe(2, nil), stampFrom, at(3), Traffic{}, at(3).Wall)
	if r.n != 1 {
		t.Errorf("%d replies: answered a probe it could not authenticate", r.n)
	}
	if v := tt.sample(t, `invalid_packets_total{reason="auth"}`, ""); v != 1 {
		t.Errorf("%v counted unauthenticated, want 1 (the other is too short for the mode)", v)
	}
	if v := tt.sample(t, `invalid_packets_total{reason="too_short"}`, ""); v != 1 {
		t.Errorf("%v counted too short, want 1", v)
	}
}

// TestSTAMPWithheld: a reply the limiter holds back takes no number, so
// the sender counts it as lost upstream (STAMP has no field for it), and
// the reflector counts it held back.
func TestSTAMPWithheld(t *testing.T) {
	tt, r := stampTable(t, Options{ReflectRate: 10}, nil) // a burst of 1, then one a 100 ms
	for seq := range uint32(3) {
		tt.HandleSTAMP(stampProbe(seq, nil), stampFrom, at(float64(seq)+1), Traffic{}, at(float64(seq)+1).Wall)
	}
	tt.HandleSTAMP(stampProbe(3, nil), stampFrom, at(200), Traffic{}, at(200).Wall)
	var rep stamp.Reflected
	if err := stamp.DecodeReflected(r.last[:r.size], &rep, nil); err != nil || r.n != 2 || rep.Seq != 1 || rep.SenderSeq != 3 {
		t.Errorf("%d replies, the last %+v, %v: want 2, numbered 1, answering 3", r.n, rep, err)
	}
	if v := stampSeries(t, tt, "replies_rate_limited_total"); v != 2 {
		t.Errorf("%v held back, want 2", v)
	}
}

// TestSTAMPAllocatesNothing: answering a session's packets allocates
// nothing once the session is known.
func TestSTAMPAllocatesNothing(t *testing.T) {
	tt, _ := stampTable(t, Options{ReflectRate: 1e6, ReflectBudget: 1e7, ReflectBudgetBytes: 1 << 34}, nil)
	probes := make([][]byte, 1000)
	for i := range probes {
		probes[i] = stampProbe(uint32(i), nil, stamp.TLV{Type: stamp.TypeExtraPadding, Value: make([]byte, 8)})
	}
	tt.HandleSTAMP(probes[0], stampFrom, at(1), Traffic{}, at(1).Wall)
	tt.HandleSTAMP(probes[1], stampFrom, at(2), Traffic{}, at(2).Wall)
	i := 2
	if n := testing.AllocsPerRun(500, func() {
		tt.HandleSTAMP(probes[i], stampFrom, at(float64(i)+1), Traffic{}, at(float64(i)+1).Wall)
		i++
	}); n != 0 {
		t.Errorf("%v allocations a packet", n)
	}
}

// TestTWAMPLight: a TWAMP-Light probe (RFC 5357 Appendix I: sequence
// number, timestamp, error estimate and 27 octets of padding, 41 in all)
// gets a reply of STAMP's base size whose TWAMP fields (the same octets)
// answer it; its session has SSID 0.
func TestTWAMPLight(t *testing.T) {
	tt, r := stampTable(t, Options{}, nil)
	sent := stamp.NTP(time.Unix(0, wall0))
	probe := make([]byte, 41)
	probe[3] = 9 // sequence number 9
	binary.BigEndian.PutUint64(probe[4:], uint64(sent))
	binary.BigEndian.PutUint16(probe[12:], 0x8001)
	tt.HandleSTAMP(probe, stampFrom, at(1), Traffic{TTL: 250, HasTTL: true}, at(2).Wall)
	var rep stamp.Reflected
	if err := stamp.DecodeReflected(r.last[:r.size], &rep, nil); err != nil || r.n != 1 || r.size != stamp.BaseSize ||
		rep.SenderSeq != 9 || rep.SenderTimestamp != sent || rep.SenderErrorEstimate != 0x8001 || rep.SenderTTL != 250 ||
		rep.Seq != 0 || rep.SSID != 0 || len(rep.TLVs) != 0 {
		t.Fatalf("%d replies of %d octets: %+v, %v", r.n, r.size, rep, err)
	}
	s, _ := scrape.Gather(tt.reg)
	if _, ok := s.Value(scrape.Series("udpprobe_receiver_packets_received_total", "sender", stampFrom.String(), "target", "stamp:0")); !ok {
		t.Error("no peer for the TWAMP-Light session")
	}
}

// TestSTAMPClassOfServiceOverSocket: over a real socket, IPv4 and IPv6, a
// test packet with a Class of Service TLV gets its reply with DSCP1 in the
// IP header (RFC 8972 section 4.4), and the TLV says what the test packet
// arrived with.
func TestSTAMPClassOfServiceOverSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("the traffic class is set and read on Linux only, not %s", runtime.GOOS)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := newTestReceiver(t, Options{STAMPListenAddress: addr, ReflectRate: 1000})
			run(t, r)
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.STAMPAddr()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw, _ := c.SyscallConn()
			if err := errors.Join(socket.EnableTrafficOf(raw), socket.SetTrafficClass(raw, 10<<2)); err != nil {
				t.Fatal(err)
			}
			cos := stamp.ClassOfService{DSCP1: 46}.Value()
			if _, err := c.Write(stampProbe(0, nil, stamp.TLV{Type: stamp.TypeClassOfService, Value: cos[:]})); err != nil {
				t.Fatal(err)
			}
			b, oob := make([]byte, 256), make([]byte, socket.OOBSize)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, oobn, _, _, err := c.ReadMsgUDPAddrPort(b, oob)
			if err != nil {
				t.Fatal(err)
			}
			if ctl := socket.Parse(oob[:oobn]); !ctl.HasTOS || ctl.TOS != 46<<2 {
				t.Errorf("the reply arrived with %+v, want traffic class %#x (DSCP1 46)", ctl, 46<<2)
			}
			var rep stamp.Reflected
			if err := stamp.DecodeReflected(b[:n], &rep, nil); err != nil || len(rep.TLVs) != 1 {
				t.Fatalf("reply %+v, %v", rep, err)
			}
			if got, ok := stamp.ParseClassOfService(rep.TLVs[0].Value); !ok || got != (stamp.ClassOfService{DSCP1: 46, DSCP2: 10}) {
				t.Errorf("class of service came back as %+v, want DSCP1 46 and DSCP2 10, what the packet arrived with", got)
			}
		})
	}
}
