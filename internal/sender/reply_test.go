package sender

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/testkit/fakeclock"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// newRoundTripTarget is a sender with one round-trip target, a socket that
// nobody reads; tests feed the reply path by hand.
func newRoundTripTarget(tb testing.TB) (*Sender, *target) {
	tb.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sink.Close() })
	s, err := New(Options{Targets: []string{sink.LocalAddr().String()}, Rate: 1000, PayloadSize: 120, Name: "me",
		RoundTrip: true, LossTimeout: time.Second,
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.conn.Close() })
	s.apply(s.next, s.clock.Now())
	return s, s.active[sink.LocalAddr().String()]
}

// replyTo is the reply to datagram seq of the target's session, sent at
// sendTime, with the receiver's count, from a receiver that has lost
// nothing (reply number count − 1).
func replyTo(tb testing.TB, tg *target, session, seq, count uint64, sendTime int64) []byte {
	tb.Helper()
	b := make([]byte, 120)
	if err := wire.Encode(b, &wire.Header{Name: []byte("me"), Target: []byte(tg.label), Session: session, Seq: seq,
		SendTime: sendTime, SendClock: sendTime}); err != nil {
		tb.Fatal(err)
	}
	wire.MakeReply(b, counts(count))
	return b
}

// counts are a version-5 receiver's counts after count datagrams and as
// many replies, none lost.
func counts(count uint64) wire.Counts {
	return wire.Counts{Received: count, Legs: wire.Legs{Session: 7, Number: count - 1}}
}

// TestRTTUsesOnlyTheMonotonicClock: the round-trip time is the difference
// of this host's monotonic readings at send and at reply. The times in the
// reply (here an hour off, as after a wall-clock step) do not enter.
func TestRTTUsesOnlyTheMonotonicClock(t *testing.T) {
	s, tg := newRoundTripTarget(t)
	tg.rt.Send(0, 1e6)
	s.HandleReply(replyTo(t, tg, s.Session(), 0, 1, int64(time.Hour)), tg.to, 6e6)
	var m dto.Metric
	if err := tg.m.RTT.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 1 || sum != 0.005 {
		t.Fatalf("%d round trips summing to %v s, want one of 0.005", n, sum)
	}
	if got := tg.roundTrip().Answered; got != 1 {
		t.Fatalf("replies received %v, want 1", got)
	}
}

// TestInvalidReplies: a probe (not a reply), a reply to another session,
// a damaged reply, a reply to a datagram never sent and junk from the
// target's address are each counted as the target's invalid replies and
// change nothing else; junk from elsewhere is foreign.
func TestInvalidReplies(t *testing.T) {
	s, tg := newRoundTripTarget(t)
	tg.rt.Send(0, 0)
	probe := replyTo(t, tg, s.Session(), 0, 1, 0)
	wire.PutFlags(probe, 0)
	wire.Seal(probe)
	damaged := replyTo(t, tg, s.Session(), 0, 1, 0)
	damaged[20] ^= 1
	elsewhere := netip.MustParseAddrPort("192.0.2.1:6464")
	for _, b := range [][]byte{probe, replyTo(t, tg, s.Session()+1, 0, 1, 0), damaged,
		replyTo(t, tg, s.Session(), 5, 1, 0), []byte("junk")} {
		s.HandleReply(b, tg.to, 1e6)
	}
	s.HandleReply([]byte("junk"), elsewhere, 1e6)
	s.HandleReply(damaged, elsewhere, 1e6)
	if got := tg.roundTrip(); got != (tracker.RoundTripCounts{Invalid: 5}) {
		t.Fatalf("counted %+v, want 5 invalid replies and nothing else", got)
	}
	var m dto.Metric
	if err := s.opts.Metrics.Foreign.Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Fatalf("foreign %v, %v; want 2", m.GetCounter().GetValue(), err)
	}
}

// TestReplyPathAllocatesNothing: sending with round-trip tracking and
// taking a reply cost no allocation.
func TestReplyPathAllocatesNothing(t *testing.T) {
	s, tg := newRoundTripTarget(t)
	b := replyTo(t, tg, s.Session(), 0, 1, 0)
	var seq uint64
	allocs := testing.AllocsPerRun(1000, func() {
		s.batch.w, s.batch.bufs = tg.w, append(s.batch.bufs, tg.buf(0))
		s.batch.to = append(s.batch.to, tg.to)
		s.batch.of = append(s.batch.of, tg)
		s.batch.dues = append(s.batch.dues, 0)
		s.flush()
		wire.PutSeq(b, seq)
		wire.MakeReply(b, counts(seq+1))
		seq++
		s.HandleReply(b, tg.to, int64(time.Since(s.epoch)))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
	if got := tg.roundTrip(); got.Answered < 1000 || got.Lost != 0 || got.Duplicated != 0 {
		t.Fatalf("%+v; want 1000 replies taken, none lost or duplicated", got)
	}
}

// BenchmarkRoundTrip is a send and its reply on the round-trip path,
// without the socket write.
func BenchmarkRoundTrip(b *testing.B) {
	s, tg := newRoundTripTarget(b)
	reply := replyTo(b, tg, s.Session(), 0, 1, 0)
	b.ReportAllocs()
	var now int64
	for seq := uint64(0); b.Loop(); seq++ {
		now += 1e6
		tg.mu.Lock()
		tg.rt.Send(seq, now)
		tg.rt.Expire(now)
		tg.mu.Unlock()
		wire.PutSeq(reply, seq)
		wire.MakeReply(reply, counts(seq+1))
		s.HandleReply(reply, tg.to, now+5e5)
	}
}

// TestUnwrap32: a STAMP reply's 32-bit number is the latest number sent
// with those low bits, across the wrap at 2^32.
func TestUnwrap32(t *testing.T) {
	const wrap = 1 << 32
	for _, tc := range []struct {
		next uint64
		low  uint32
		want uint64
	}{
		{10, 3, 3},
		{10, 10, 10}, // not sent yet: the round trip refuses it
		{wrap + 2, 0xFFFFFFFE, wrap - 2},
		{wrap + 2, 1, wrap + 1},
		{wrap + 2, 2, 2}, // 2^32+2 is not sent yet: 2 was
		{3*wrap + 7, 5, 3*wrap + 5},
		{3*wrap + 7, 9, 2*wrap + 9},
	} {
		if got := unwrap32(tc.next, tc.low); got != tc.want {
			t.Errorf("unwrap32(%#x, %#x) = %#x, want %#x", tc.next, tc.low, got, tc.want)
		}
	}
}

// stampTarget is a sender with one STAMP target, a socket nobody reads;
// tests feed the reply path by hand.
func stampTarget(t *testing.T) (*Sender, *target) {
	t.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	label := "stamp://" + sink.LocalAddr().String()
	s, err := New(Options{Targets: []string{label}, Rate: 1000, Name: "me", RoundTrip: true, LossTimeout: time.Second,
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	s.apply(s.next, s.clock.Now())
	tg := s.active[label]
	if tg == nil || !tg.stamp || int(tg.size) != stamp.BaseSize {
		t.Fatalf("target %+v", tg)
	}
	return s, tg
}

// stampReplies sends n test packets at 1 ms, then hands the sender the
// replies given as (the test packet's number, the reply's own), each 1 ms
// after its test packet and held 200 µs by the reflector, and settles.
func stampReplies(s *Sender, tg *target, n uint64, replies [][2]uint32) tracker.RoundTripCounts {
	for seq := range n {
		tg.rt.Send(seq, int64(seq)*1e6)
	}
	tg.seq = n
	rx := stamp.NTP(time.Unix(1_800_000_000, 0))
	for _, r := range replies {
		rep := stamp.Reflected{SenderSeq: r[0], Seq: r[1], ReceiveTimestamp: rx,
			Timestamp: stamp.NTP(time.Unix(1_800_000_000, 200_000))}
		s.HandleReply(rep.Append(nil, nil), tg.to, int64(r[0])*1e6+int64(time.Millisecond))
	}
	tg.rt.Expire(int64(10 * time.Second))
	return tg.rt.Counts()
}

// TestSTAMPReplies: a STAMP target's reply is found by its address; its
// round-trip time is the monotonic one less the reflector's time between
// its two timestamps. A stateless reflector's replies copy the test
// packets' numbers: the loss among them has no direction.
func TestSTAMPReplies(t *testing.T) {
	s, tg := stampTarget(t)
	if c := stampReplies(s, tg, 4, [][2]uint32{{0, 0}, {1, 1}, {3, 3}}); c != (tracker.RoundTripCounts{Answered: 3, Lost: 1}) {
		t.Fatalf("counts %+v: want the three answered, 2 lost with no direction", c)
	}
	var m dto.Metric
	if err := tg.m.RTT.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	// 1 ms less the 200 µs held, to the NTP timestamps' 2^-32 s.
	if h := m.GetHistogram(); h.GetSampleCount() != 3 || h.GetSampleSum() < 3*0.0007999 || h.GetSampleSum() > 3*0.0008001 {
		t.Fatalf("RTT %d samples summing to %v s, want 3 of 0.8 ms", h.GetSampleCount(), h.GetSampleSum())
	}
	if v := testutil.ToFloat64(tg.m.Stateful); v != 0 || tg.stateful {
		t.Errorf("stateful %v for a reflector that copies the numbers", v)
	}
}

// TestSTAMPStateful: a stateful reflector numbers its replies. Of 6 test
// packets, 2 is lost on the way there (the reflector answers 0, 1, 3, 4, 5
// as its 0 to 4) and the reply to 4 on the way back: the reply to 3,
// numbered 2, shows the reflector stateful, and the two losses are split,
// one each way.
func TestSTAMPStateful(t *testing.T) {
	s, tg := stampTarget(t)
	c := stampReplies(s, tg, 6, [][2]uint32{{0, 0}, {1, 1}, {3, 2}, {5, 4}})
	if c != (tracker.RoundTripCounts{Answered: 4, Lost: 2, Upstream: 1, Downstream: 1}) {
		t.Fatalf("counts %+v: want 4 answered, 2 lost, one upstream, one downstream", c)
	}
	if v := testutil.ToFloat64(tg.m.Stateful); v != 1 || !tg.stateful {
		t.Errorf("stateful %v", v)
	}
}

// TestHeldReplyInTime: the reply reader may read a reply up to its longest
// hold after it arrived, so round trips are decided that much later: a
// reply that arrived 1 ns within the waiting time, and was read 5 ms after
// it had passed, is answered, not lost and late.
func TestHeldReplyInTime(t *testing.T) {
	if !socket.Timestamps {
		t.Skip("no kernel timestamps here: the reply reader never holds")
	}
	const timeout = 100 * time.Millisecond
	s, _, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9"}, RoundTrip: true, LossTimeout: timeout})
	if lag := time.Duration(s.readLag()); lag < 5*time.Millisecond || lag != s.pace.Longest() {
		t.Fatalf("round trips are decided %v after their waiting time, the reader holds up to %v", lag, s.pace.Longest())
	}
	tg := s.active["127.0.0.1:9"]
	sent := tg.due() // the fake clock is never late: seq 0 leaves at its slot
	clk := s.clock.(*fakeclock.Clock)
	clk.At(s.epoch.Add(time.Duration(sent)+timeout+5*time.Millisecond), func() {
		s.HandleReply(replyTo(t, tg, s.Session(), 0, 1, sent), tg.to, sent+int64(timeout)-1)
	})
	run(t, s, 300*time.Millisecond)
	c := tg.roundTrip()
	if c.Answered != 1 || c.Late != 0 {
		t.Fatalf("%+v: the reply in time was not answered", c)
	}
}
