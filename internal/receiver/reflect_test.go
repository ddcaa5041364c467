package receiver

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/udpprobe/udpprobe/internal/wire"
)

// probe is a datagram sent at s ms on both of the sender's clocks, from an
// arbitrary wall-clock origin.
func probe(t testing.TB, session, seq uint64, s float64) []byte {
	t.Helper()
	b := make([]byte, 104)
	h := wire.Header{Name: []byte("alpha"), Target: []byte(testTarget), Session: session, Seq: seq,
		SendTime: wall0 + int64(s*1e6), SendClock: int64(s * 1e6)}
	if err := wire.Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	return b
}

const wall0 = 1_700_000_000 * int64(time.Second)

// reuse turns b, a probe or the reply handle made of it in place, into the
// probe with sequence number seq, sent at seq ms.
func reuse(b []byte, seq int64) {
	wire.PutFlags(b, 0)
	wire.PutSeq(b, uint64(seq))
	wire.PutSendTime(b, wall0+seq*1e6, seq*1e6)
	wire.Seal(b)
}

// sinkAddr is the address of a socket that takes replies and is never read.
func sinkAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sink.Close() })
	return sink.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestTiming drives handle with chosen send and arrival times and checks
// one-way delay, clock skew, RFC 3550 jitter and IPDV against values worked
// out by hand. Arrival a ms: wall clock wall0 + a (but for a step), monotonic
// a.
func TestTiming(t *testing.T) {
	tt := newTable(t, Options{})
	const hour = float64(time.Hour / time.Millisecond)
	for _, d := range []struct {
		seq        uint64
		sent, wall float64 // ms
		mono       float64
	}{
		{0, 0, 10, 10},            // transit 10
		{1, 40, 70, 70},           // 30: |D| = 20, J = 1.25
		{2, 80, 90, 90},           // 10: |D| = 20, J = 1.25 + 18.75/16 = 2.421875
		{4, 160, 170, 170},        // 10: |D| = 0 against 2, J = 2.421875·15/16; 3 missing: no IPDV
		{3, 120, 180, 180},        // reordered: delay 60, no jitter
		{5, 200, 210 - hour, 210}, // the wall clock stepped back an hour: skew; |D| = 0
	} {
		tt.handle(probe(t, 1, d.seq, d.sent), Instant{Wall: wall0 + int64(d.wall*1e6), Mono: int64(d.mono * 1e6)})
	}
	if n, sum := tt.sample(t, "one_way_delay_seconds_count", "alpha"), tt.sample(t, "one_way_delay_seconds_sum", "alpha"); n != 5 || math.Abs(sum-0.120) > 1e-9 {
		t.Errorf("one-way delay: %v samples summing to %v s, want 5 and 0.120", n, sum)
	}
	if got := tt.sample(t, "one_way_delay_unsynchronised_total", "alpha"); got != 1 {
		t.Errorf("%v delays not recorded, want 1 (arrived before it was sent)", got)
	}
	want := 2.421875 * 15 / 16 * 15 / 16 / 1e3
	if got := tt.sample(t, "jitter_seconds", "alpha"); math.Abs(got-want) > 1e-12 {
		t.Errorf("jitter %v s, want %v", got, want)
	}
	if n, sum := tt.sample(t, "ipdv_seconds_count", "alpha"), tt.sample(t, "ipdv_seconds_sum", "alpha"); n != 3 || math.Abs(sum-0.040) > 1e-9 {
		t.Errorf("IPDV: %v samples summing to %v s, want 3 (0-1, 1-2, 4-5) and 0.040", n, sum)
	}
	// A restart: the new session's first datagram is on probation, and
	// the current session's jitter stands; the second confirms it, and
	// jitter starts over from the new session's first two (|D| = 30 ms).
	tt.handle(probe(t, 2, 0, 300), at(310))
	if got := tt.sample(t, "jitter_seconds", "alpha"); math.Abs(got-want) > 1e-12 {
		t.Errorf("jitter %v s with a new session on probation, want the current session's %v", got, want)
	}
	tt.handle(probe(t, 2, 1, 340), at(380))
	if got, want := tt.sample(t, "jitter_seconds", "alpha"), 30.0/16/1e3; math.Abs(got-want) > 1e-12 {
		t.Errorf("jitter %v s once the new session is confirmed, want %v", got, want)
	}
}

// TestReflect: a reflecting table answers each valid probe, goodbyes
// included, with a same-size reply to its source carrying its received
// count and, numbered in the order they were sent, its account of the
// legs; it never answers a reply.
func TestReflect(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 1000})
	from := netip.MustParseAddrPort("192.0.2.1:5000")
	var id uint64 // the reflector's id for the session
	for i, step := range []struct {
		b       []byte
		replies int // sent so far
		seq     uint64
		count   uint64
	}{
		{probe(t, 1, 0, 0), 1, 0, 1},
		{probe(t, 1, 2, 20), 2, 2, 2},
		{probe(t, 1, 2, 20), 2, 2, 2}, // a duplicate (a replay, perhaps) is never answered
		{probe(t, 1, 1, 10), 3, 1, 3}, // reordered
	} {
		size := len(step.b)
		tt.Handle(step.b, from, at(float64(i)))
		h := tt.replies.header(t)
		if tt.replies.n != step.replies || tt.replies.to != from || !h.Reply() || h.Goodbye() || h.Seq != step.seq ||
			h.Received != step.count || tt.replies.size != size || h.SendClock != int64(step.seq)*10e6 {
			t.Fatalf("after datagram %d, reply %d: %+v (%d bytes) to %v, want reply %d: seq %d count %d in %d bytes to %v",
				i, tt.replies.n, h, tt.replies.size, tt.replies.to, step.replies, step.seq, step.count, size, from)
		}
		if id == 0 {
			id = h.Legs.Session
		}
		if want := (wire.Legs{Session: id, Number: uint64(step.replies - 1)}); id == 0 || h.Legs != want {
			t.Fatalf("after datagram %d: legs %+v, want %+v from a non-zero session", i, h.Legs, want)
		}
	}
	reply := probe(t, 1, 3, 30)
	wire.MakeReply(reply, wire.Counts{Received: 9})
	tt.Handle(reply, from, at(5))
	if n := testutil.ToFloat64(tt.m.Invalid.WithLabelValues("unexpected_reply")); n != 1 || tt.replies.n != 3 {
		t.Fatalf("a reply was counted %v times as invalid and %d replies were sent; want 1 and 3", n, tt.replies.n)
	}
	// The goodbye says 4 was the last: 3 and 4 are pending, and its reply
	// counts them lost unless they come; it is not numbered itself.
	bye := probe(t, 1, 4, 40)
	wire.PutFlags(bye, wire.FlagGoodbye)
	wire.Seal(bye)
	tt.Handle(bye, from, at(6))
	if h := tt.replies.header(t); tt.replies.n != 4 || !h.Reply() || !h.Goodbye() || h.Received != 3 ||
		h.Legs != (wire.Legs{Session: id, Number: 3, Lost: 2}) {
		t.Fatalf("goodbye reply %+v, want the final count 3, 3 replies numbered and 2 lost", h)
	}
	if got := tt.sample(t, "replies_sent_total", "alpha"); got != 4 {
		t.Fatalf("%v replies counted, want 4", got)
	}
}

// TestReflectOverSocket: the socket loop sends the table's replies to the
// probe's source.
func TestReflectOverSocket(t *testing.T) {
	r := newTestReceiver(t, Options{Reflect: true, ReflectRate: 1000})
	run(t, r)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(probe(t, 1, 7, 0)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 124)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	var h wire.Header
	if err := wire.Decode(b[:n], &h); err != nil || !h.Reply() || h.Seq != 7 || h.Received != 1 || n != 104 {
		t.Fatalf("reply %+v (%d bytes, %v), want the reply to 7 with count 1 in 104 bytes, the probe's size", h, n, err)
	}
}

// TestReplyErrors: a reply the host fails to send is counted for the host
// and warned about with the error.
func TestReplyErrors(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 1000})
	tt.replies.fail = errors.New("no route to host")
	for seq := range uint64(3) {
		tt.handle(probe(t, 1, seq, float64(seq)), at(float64(seq)))
	}
	tt.Housekeep(at(10))
	if errs, sent := tt.sample(t, "reply_errors_total", ""), tt.sample(t, "replies_sent_total", "alpha"); errs != 3 || sent != 0 {
		t.Fatalf("reply errors %v, sent %v; want 3 and 0", errs, sent)
	}
	lines := tt.logs.FilterMessageSnippet("replies could not be sent").All()
	if len(lines) != 1 || lines[0].ContextMap()["failed"] != uint64(3) || lines[0].ContextMap()["error"] != "no route to host" {
		t.Fatalf("warnings: %v", lines)
	}
}

// TestLimiter: a token bucket at 10 per second with a burst of 2.
func TestLimiter(t *testing.T) {
	b := bucket{rate: 10, depth: 2}
	l := b.full()
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	var got []bool
	for _, at := range []int64{0, 0, 0, 50, 100, 100, 400, 400, 400} {
		got = append(got, l.take(ms(at), 1, b))
	}
	want := []bool{true, true, false, false, true, false, true, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allow sequence %v, want %v", got, want)
		}
	}
}

// TestReflectRateLimited counts replies held back by the limiter.
func TestReflectRateLimited(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 10}) // a burst of 1
	// 5 in 4 ms: one token, then none.
	for seq := range uint64(5) {
		tt.handle(probe(t, 1, seq, float64(seq)), at(float64(seq)))
	}
	if sent, limited := tt.sample(t, "replies_sent_total", "alpha"), tt.sample(t, "replies_rate_limited_total", "alpha"); sent != 1 || limited != 4 || tt.replies.n != 1 {
		t.Fatalf("sent %v, limited %v; want 1 and 4", sent, limited)
	}
	// A token later, the next reply tells the sender of the 4 held back.
	tt.handle(probe(t, 1, 5, 150), at(150))
	if h := tt.replies.header(t); tt.replies.n != 2 || h.Seq != 5 || h.Received != 6 || h.Withheld != 4 {
		t.Fatalf("reply %d: %+v, want seq 5 with 6 received and 4 withheld", tt.replies.n, h)
	}
	// The goodbye's replies pass the empty bucket, three a session, with
	// the final counts.
	for i := range 4 {
		bye := probe(t, 1, 5, 160)
		wire.PutFlags(bye, wire.FlagGoodbye)
		wire.Seal(bye)
		tt.handle(bye, at(160+float64(i)))
	}
	if h := tt.replies.header(t); tt.replies.n != 5 || !h.Goodbye() || h.Received != 6 || h.Withheld != 4 {
		t.Fatalf("%d replies, the last %+v; want 3 goodbye replies with 6 received and 4 withheld", tt.replies.n, h)
	}
	if limited := tt.sample(t, "replies_rate_limited_total", "alpha"); limited != 5 {
		t.Fatalf("limited %v, want 5: the fourth goodbye's reply is metered", limited)
	}
	// One warning names both rates: the limit and the sender's, 1,000 a
	// second by its clock.
	tt.Housekeep(at(200))
	lines := tt.logs.FilterMessageSnippet("held back under the reflect rate limit").All()
	if len(lines) != 1 || lines[0].ContextMap()["reflect_rate"] != 10.0 || lines[0].ContextMap()["last_sender_rate"] != 1000.0 ||
		lines[0].ContextMap()["withheld"] != uint64(5) {
		t.Fatalf("warnings: %v", lines)
	}
}

// TestReflectAllocatesNothing: the receive path with timing and a reply
// costs no allocation.
func TestReflectAllocatesNothing(t *testing.T) {
	r := newTestReceiver(t, Options{Reflect: true, ReflectRate: 1e6})
	defer r.in.Close()
	to := sinkAddr(t)
	b := probe(t, 1, 0, 0)
	r.table.Handle(b, to, at(0))
	var seq int64
	allocs := testing.AllocsPerRun(500, func() {
		seq++
		reuse(b, seq)
		r.table.Handle(b, to, at(float64(seq)+0.5))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
	if got := r.sample(t, "replies_sent_total", "alpha"); got < 500 {
		t.Fatalf("%v replies sent; the loop did not exercise the reply path", got)
	}
}

// BenchmarkHandle is the receive path after the read: decode, peer lookup,
// tracker, one-way delay, jitter and IPDV, and with reflect the reply's
// rewrite and write.
func BenchmarkHandle(b *testing.B) {
	for _, reflect := range []bool{false, true} {
		b.Run(map[bool]string{false: "timing", true: "reflect"}[reflect], func(b *testing.B) {
			r := newTestReceiver(b, Options{Reflect: reflect, ReflectRate: 1e9})
			defer r.in.Close()
			to := sinkAddr(b)
			buf := probe(b, 1, 0, 0)
			b.ReportAllocs()
			for seq := int64(0); b.Loop(); seq++ {
				reuse(buf, seq)
				r.table.Handle(buf, to, at(float64(seq)+0.5))
			}
		})
	}
}

// TestTrafficClass: the datagrams of a sender that sets a traffic class
// are counted by what arrived: another DSCP is a remark, CE a CE mark,
// ECT arriving Not-ECT a bleach; a sender that sets none, or a datagram
// whose IP header the socket did not read, counts nothing, and its
// peer exports no series for them.
func TestTrafficClass(t *testing.T) {
	tt := newTable(t, Options{})
	ef := func(name string, seq uint64, tc uint8) []byte { // DSCP 46 with ECT(1): 0xb9
		return sentWith(t, wire.Header{Name: []byte(name), Seq: seq, TrafficClass: tc})
	}
	for i, arrived := range []struct {
		tos uint8
		has bool
	}{
		{0xb9, true},  // as sent
		{0x01, true},  // DSCP 0: remarked, ECT(1) kept
		{0xbb, true},  // CE
		{0xb8, true},  // Not-ECT: bleached
		{0x00, true},  // remarked and bleached
		{0x03, true},  // remarked and CE
		{0x00, false}, // not read: nothing
	} {
		tr := Traffic{TOS: arrived.tos, HasTOS: arrived.has, TTL: 64, HasTTL: arrived.has}
		tt.HandleTraffic(ef("marked", uint64(i), 0xb9), netip.AddrPort{}, at(float64(i)), tr)
		tt.HandleTraffic(ef("plain", uint64(i), 0), netip.AddrPort{}, at(float64(i)), tr)
	}
	for name, want := range map[string]float64{"packets_remarked_total": 3, "packets_ce_marked_total": 2, "packets_ecn_bleached_total": 2} {
		if got := tt.sample(t, name, "marked"); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		if _, ok := tt.value(t, name, "plain"); ok {
			t.Errorf("%s exported for a sender that sets no traffic class", name)
		}
	}
}

// TestHopCount: a peer's hop count is the hop limit its datagrams say less
// the one they arrived with, and a path change is another count that
// lasts 3 datagrams in a row; a stray one, a sender that does not say, or
// a datagram that gained hops counts nothing, and without the option
// there are no such series.
func TestHopCount(t *testing.T) {
	sent := func(name string, seq uint64, hopLimit uint8) []byte {
		return sentWith(t, wire.Header{Name: []byte(name), Seq: seq, HopLimit: hopLimit})
	}
	for _, on := range []bool{true, false} {
		tt := newTable(t, Options{HopCount: on})
		arrived := []uint8{63, 63, 62, 63, 62, 62, 62, 62, 63, 65}
		for i, ttl := range arrived {
			tr := Traffic{TTL: ttl, HasTTL: true}
			tt.HandleTraffic(sent("routed", uint64(i), 64), netip.AddrPort{}, at(float64(i)), tr)
			tt.HandleTraffic(sent("silent", uint64(i), 0), netip.AddrPort{}, at(float64(i)), tr)
		}
		hops, ok := tt.value(t, "hop_count", "routed")
		changes, _ := tt.value(t, "path_changes_total", "routed")
		if on && (!ok || hops != 2 || changes != 1) {
			t.Errorf("hop count %v (exported: %v), %v path changes; want 2 and 1: one change, from 1 to 2, lasted", hops, ok, changes)
		}
		if !on && ok {
			t.Error("hop count exported without the option")
		}
		if _, ok := tt.value(t, "hop_count", "silent"); ok {
			t.Error("hop count exported for a sender that does not say its hop limit")
		}
	}
}

// sentWith is the datagram h of session 1 to testTarget, sent at h.Seq ms.
func sentWith(t *testing.T, h wire.Header) []byte {
	t.Helper()
	b := make([]byte, 128)
	h.Target, h.Session = []byte(testTarget), 1
	h.SendTime, h.SendClock = wall0+int64(h.Seq)*1e6, int64(h.Seq)*1e6
	if err := wire.Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStreamStart: the numbers below a session's first datagram belong to
// it when the session is younger than a waiting time by the sender's send
// clock (it sent 0 at the clock's origin or later): lost unless they come
// in time, reordered if they do. An older session seen from the middle (a
// receiver started late) counts nothing before its first datagram.
func TestStreamStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		origin    float64  // ms on the send clock at number 0
		late      []uint64 // numbers below the first that come within its waiting time
		lost, rec float64
	}{
		{"a young session loses its first numbers", 0, nil, 3, 3},
		{"and they are reordered if they come", 0, []uint64{1}, 2, 4},
		{"an old one seen from its middle", 1e4, nil, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTable(t, Options{}) // a 100 ms waiting time
			for i, seq := range []uint64{3, 4} {
				tt.handle(probe(t, 1, seq, tc.origin+float64(seq)*10), at(float64(i)))
			}
			for _, seq := range tc.late {
				tt.handle(probe(t, 1, seq, tc.origin+float64(seq)*10), at(5))
			}
			tt.handle(probe(t, 1, 5, tc.origin+50), at(6))
			tt.Housekeep(at(500))
			if lost, rec := tt.sample(t, "packets_lost_total", "alpha"), tt.sample(t, "packets_received_total", "alpha"); lost != tc.lost || rec != tc.rec {
				t.Errorf("lost %v, received %v; want %v and %v", lost, rec, tc.lost, tc.rec)
			}
		})
	}
}
