package receiver

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// streamCounts is what the receiver exported for one peer.
type streamCounts struct {
	received, lost, duplicated, reordered, late, stray, resyncs, restarts uint64
	gaps, gapSum                                                          uint64
}

func exported(t *testing.T, o observed, peer string) streamCounts {
	t.Helper()
	c := func(name string) uint64 { return uint64(o.sample(t, name, peer)) }
	return streamCounts{
		received: c("packets_received_total"), lost: c("packets_lost_total"), duplicated: c("packets_duplicated_total"),
		reordered: c("packets_reordered_total"), late: c("packets_late_total"), stray: c("packets_stray_total"),
		resyncs: c("sequence_resyncs_total"), restarts: c("peer_restarts_total"),
		gaps: c("loss_gap_length_packets_count"), gapSum: c("loss_gap_length_packets_sum"),
	}
}

// script hands datagrams to a table at synthetic times.
type script struct {
	tt  *testTable
	now time.Duration // since the test's origin
}

// send hands the table one datagram of peer "real", session 1, for each
// number, step apart.
func (c *script) send(t *testing.T, step time.Duration, seqs ...uint64) {
	t.Helper()
	for _, seq := range seqs {
		c.tt.handle(datagram(t, "real", 1, seq, 0), c.at())
		c.now += step
	}
}

func (c *script) at() Instant { return at(float64(c.now) / 1e6) }

// settle lets every waiting time pass.
func (c *script) settle() {
	c.now += time.Second
	c.tt.Housekeep(c.at())
}

func span(from, to uint64) []uint64 { // [from, to]
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestSequenceAbuse sends the numbers a broken or hostile sender might, in
// the real stream's own name and session (without keys anyone can), and
// requires exactly the counts the rules in docs/metrics.md give: a lone
// implausible number is a stray and nothing else; the real stream recovers
// from any two; huge plausible jumps are loss, counted without walking
// them; repeats are duplicates and replays duplicates or late.
func TestSequenceAbuse(t *testing.T) {
	const huge = 1 << 40
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *script)
		want streamCounts
	}{{
		name: "one implausible number amid the real stream is a stray",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Millisecond, span(0, 49)...)
			c.send(t, time.Millisecond, wire.MaxSeq)
			c.send(t, time.Millisecond, span(50, 99)...)
		},
		want: streamCounts{received: 100, stray: 1},
	}, {
		name: "two forged in a row take the stream; the next two real ones take it back",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Millisecond, span(0, 49)...)
			c.send(t, time.Millisecond, huge, huge+1)
			c.send(t, time.Millisecond, span(50, 99)...)
		},
		// huge is a stray, huge+1 a resync; 50, far behind, a stray, 51 the
		// resync back. Only 50 goes uncounted.
		want: streamCounts{received: 100, stray: 2, resyncs: 2},
	}, {
		name: "the largest number, then a wrap to zero",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Millisecond, span(wire.MaxSeq-3, wire.MaxSeq)...)
			c.send(t, time.Millisecond, 0, 1, 2)
		},
		want: streamCounts{received: 6, stray: 1, resyncs: 1},
	}, {
		name: "the largest plausible jump is loss, settled without walking it",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Millisecond, 0, 1, 1+1<<31, 2+1<<31)
		},
		want: streamCounts{received: 4, lost: 1<<31 - 1, gaps: 1, gapSum: 1<<31 - 1},
	}, {
		name: "one past it is a stray",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Millisecond, 0, 1, 2+1<<31, 2)
		},
		want: streamCounts{received: 3, stray: 1},
	}, {
		name: "a repeated number is one datagram and its duplicates",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Microsecond, 4)
			for range 1000 {
				c.send(t, time.Microsecond, 5)
			}
		},
		// The session is younger than a waiting time (its send clock is 0),
		// so 0 to 3, sent before 4, are its own: lost, one period.
		want: streamCounts{received: 2, duplicated: 999, lost: 4, gaps: 1, gapSum: 4},
	}, {
		name: "backwards: below the first number, in its waiting time and after",
		run: func(t *testing.T, c *script) {
			for seq := uint64(100); seq > 50; seq-- {
				c.send(t, time.Millisecond, seq)
			}
			c.settle()
			for seq := uint64(50); seq != math.MaxUint64; seq-- {
				c.send(t, time.Millisecond, seq)
			}
		},
		// 99 down to 51 extend the stream downwards (reordered); once the
		// first datagram's waiting time is over, lower ones are late. The
		// session is younger than a waiting time, so those, 0 to 50, were
		// lost (one period) before they came late.
		want: streamCounts{received: 50, reordered: 49, late: 51, lost: 51, gaps: 1, gapSum: 51},
	}, {
		name: "replays: duplicates in the window, late beyond it",
		run: func(t *testing.T, c *script) {
			c.send(t, time.Microsecond, span(0, 199)...)
			c.send(t, time.Microsecond, span(0, 199)...)
			c.send(t, time.Microsecond, span(200, 70_000)...)
			c.send(t, time.Microsecond, span(0, 199)...)
		},
		want: streamCounts{received: 70_001, duplicated: 200, late: 200},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTable(t, Options{})
			c := &script{tt: tt}
			tc.run(t, c)
			c.settle()
			if got := exported(t, tt.observed, "real"); got != tc.want {
				t.Errorf("exported\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestSequenceOutOfRange: a number above 2^63−1 is a malformed header,
// whatever the stream.
func TestSequenceOutOfRange(t *testing.T) {
	tt := newTable(t, Options{})
	tt.handle(datagram(t, "real", 1, 0, 0), at(0))
	tt.handle(datagram(t, "real", 1, 1, 0), at(0))
	b := datagram(t, "real", 1, 0, 0)
	wire.PutSeq(b, wire.MaxSeq+1)
	wire.Seal(b)
	tt.handle(b, at(0))
	if n := testutil.ToFloat64(tt.m.Invalid.WithLabelValues(metrics.ReasonHeader)); n != 1 {
		t.Fatalf("%v bad_header invalids, want 1", n)
	}
	if got := exported(t, tt.observed, "real"); got != (streamCounts{received: 2}) {
		t.Fatalf("the stream counted %+v", got)
	}
}

// TestReplayAuthenticated: keys do not stop a replay (docs/protocol.md);
// a replayed datagram is a duplicate, counted as one.
func TestReplayAuthenticated(t *testing.T) {
	tt := newTable(t, Options{Keys: [][]byte{testKey}})
	for _, seq := range []uint64{0, 1, 2, 1, 1, 0} {
		tt.handle(signedDatagram(t, testKey, "real", seq), at(0))
	}
	if got := exported(t, tt.observed, "real"); got != (streamCounts{received: 3, duplicated: 3}) {
		t.Fatalf("the stream counted %+v", got)
	}
}

// TestSequenceAbuseAllocatesNothing: jumps of any size, strays, resyncs
// either way and the settling they cause allocate nothing; nothing the
// receiver holds grows with the distance jumped.
func TestSequenceAbuseAllocatesNothing(t *testing.T) {
	tt := newTable(t, Options{})
	b := datagram(t, "real", 1, 0, 0)
	var now float64 // ms
	put := func(seq uint64) {
		wire.PutSeq(b, seq)
		wire.Seal(b)
		now++
		tt.handle(b, at(now))
	}
	put(0) // on probation until the first round's first datagram
	seq := uint64(1)
	round := func() {
		put(seq)
		put(seq + 1<<31)     // plausible: 2^31−1 lost
		put(seq + 1<<31 + 7) // a gap that waits for its deadline
		far := seq + 1<<40
		put(far)     // stray
		put(far + 1) // resync ahead
		put(seq + 1) // stray, far behind
		put(seq + 2) // resync back
		seq += 3
	}
	round() // the gap queue takes its first storage
	if allocs := testing.AllocsPerRun(1000, round); allocs != 0 {
		t.Fatalf("%v allocations per round of abuse", allocs)
	}
	// AllocsPerRun runs the round once more than asked, to warm up.
	const rounds = 1 + 1 + 1000
	got := exported(t, tt.observed, "real")
	if got.stray != 2*rounds || got.resyncs != 2*rounds || got.lost != rounds*(1<<31-1+6) || got.gaps != 2*rounds {
		t.Fatalf("counted %+v, want a round to count 2 strays, 2 resyncs, and 2^31−1 + 6 lost in 2 gaps", got)
	}
}

// TestStrayWarning: strays are worth a person's look (a broken sender, or
// forgery), so they are warned about, once a minute at most, with the
// sender and target.
func TestStrayWarning(t *testing.T) {
	tt := newTable(t, Options{})
	c := &script{tt: tt}
	c.send(t, time.Millisecond, 0, 1, wire.MaxSeq, 2, wire.MaxSeq-5)
	tt.Housekeep(c.at())
	c.send(t, time.Millisecond, wire.MaxSeq)
	tt.Housekeep(at(float64(c.now+time.Second) / 1e6))
	lines := tt.logs.FilterMessageSnippet("implausibly far").All()
	if len(lines) != 1 || lines[0].ContextMap()["ignored"] != uint64(2) || lines[0].ContextMap()["last_sender"] != "real" ||
		lines[0].ContextMap()["last_target"] != testTarget {
		t.Fatalf("warnings: %v", lines)
	}
}

// TestNameConflict: two live senders with one name alternate sessions. A
// restarted sender's stragglers, within the loss timeout (100 ms here) of
// the new session's first datagram, are not a conflict; datagrams of the
// old session after that are, each counted, and warned about once with
// both sessions.
func TestNameConflict(t *testing.T) {
	tt := newTable(t, Options{})
	for _, d := range []struct {
		session, seq uint64
		ms           float64
	}{
		{1, 0, 0}, {1, 1, 10},
		{2, 0, 20},  // a restart
		{1, 2, 60},  // in flight when it began: a straggler
		{2, 1, 119}, // the new session goes on
		{1, 3, 121}, // the old one too, past the loss timeout: a conflict
		{2, 2, 130},
		{1, 4, 140}, // and again
	} {
		tt.handle(datagram(t, "alpha", d.session, d.seq, 0), at(d.ms))
	}
	if n, r := tt.sample(t, "name_conflict_packets_total", "alpha"), tt.sample(t, "peer_restarts_total", "alpha"); n != 2 || r != 1 {
		t.Fatalf("%v name conflicts, %v restarts; want 2 and 1", n, r)
	}
	tt.Housekeep(at(200))
	lines := tt.logs.FilterMessageSnippet("two live senders share a name").All()
	if len(lines) != 1 {
		t.Fatalf("%d conflict warnings, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["sender"] != "alpha" || f["target"] != testTarget || f["datagrams"] != uint64(2) ||
		fmt.Sprint(f["sessions"]) != "[1 2]" {
		t.Fatalf("conflict warning %v", f)
	}
}

// TestReplaysDoNotKeepASenderAlive: copies of a sender's last datagram,
// replayed after it stopped, are duplicates: they do not refresh when it
// was last heard, so the silence alert sees it and the peer expires on
// time; and a probe sent ten times is answered once.
func TestReplaysDoNotKeepASenderAlive(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 1000, PeerExpiry: time.Second})
	for seq := range uint64(5) {
		tt.handle(probe(t, 1, seq, float64(seq)), at(float64(seq)))
	}
	last := tt.sample(t, "last_packet_timestamp_seconds", "alpha")
	for i := range 50 {
		tt.handle(probe(t, 1, 4, 4), at(float64(10+i*10)))
	}
	if got, dup := tt.sample(t, "last_packet_timestamp_seconds", "alpha"), tt.sample(t, "packets_duplicated_total", "alpha"); got != last || dup != 50 {
		t.Fatalf("after 50 replays: last packet %v (was %v), %v duplicated; want it unchanged and 50", got, last, dup)
	}
	if tt.replies.n != 5 {
		t.Fatalf("%d replies to 5 probes and 50 replays of one, want 5", tt.replies.n)
	}
	tt.Housekeep(at(4 + 1000)) // a second after the last first copy
	if tt.Len() != 0 {
		t.Fatalf("the replayed sender is still in the table: %d peers", tt.Len())
	}
}

// TestReflectBudget: a hundred invented names, each within its own reply
// rate, share the budget of all replies: at one instant it answers its
// burst, a tenth of a second's worth, and holds back the rest, counted per
// peer as rate-limited; the bytes budget stops large replies the same way.
func TestReflectBudget(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 1000, ReflectBudget: 500, MaxPeers: 100})
	for i := range 100 {
		tt.handle(datagram(t, fmt.Sprintf("invented-%d", i), 1, 0, 0), at(0))
	}
	s, err := scrape.Gather(tt.reg)
	if err != nil {
		t.Fatal(err)
	}
	limited, _ := s.Sum("udpprobe_receiver_replies_rate_limited_total")
	if tt.replies.n != 50 || limited != 50 {
		t.Fatalf("%d replies and %v held back for 100 names at once under a budget of 500/s, want 50 and 50",
			tt.replies.n, limited)
	}

	big := newTable(t, Options{Reflect: true, ReflectRate: 1000, ReflectBudgetBytes: 1 << 20, MaxPeers: 100})
	for i := range 100 {
		b := make([]byte, 16<<10)
		h := wire.Header{Name: fmt.Appendf(nil, "big-%d", i), Target: []byte(testTarget), Session: 1}
		if err := wire.Encode(b, &h); err != nil {
			t.Fatal(err)
		}
		big.handle(b, at(0))
	}
	if want := (1 << 20) / 10 / (16 << 10); big.replies.n != want {
		t.Fatalf("%d replies of 16 KiB at once under a budget of 1 MiB/s, want %d (a tenth of a second's bytes)",
			big.replies.n, want)
	}
}

// TestReplayedOldSession: a replayed datagram of a session gone by (sent
// before the current session's datagrams) is a stray: it does not restart
// the peer, and jitter and IPDV go on following the live session.
func TestReplayedOldSession(t *testing.T) {
	tt := newTable(t, Options{})
	// Sessions 1, 2 and 3 in turn, 10 datagrams each, 1 ms apart; then a
	// copy of session 1's last datagram.
	ms := 0.0
	for session := uint64(1); session <= 3; session++ {
		for seq := range uint64(10) {
			tt.handle(probe(t, session, seq, ms), at(ms+float64(seq%2)*0.1))
			ms++
		}
	}
	ipdv := tt.sample(t, "ipdv_seconds_count", "alpha")
	tt.handle(probe(t, 1, 9, 9), at(ms))
	if r, s := tt.sample(t, "peer_restarts_total", "alpha"), tt.sample(t, "packets_stray_total", "alpha"); r != 2 || s != 1 {
		t.Fatalf("after the replay: %v restarts, %v strays; want 2 and 1", r, s)
	}
	for seq := uint64(10); seq < 20; seq++ {
		tt.handle(probe(t, 3, seq, ms), at(ms+float64(seq%2)*0.1))
		ms++
	}
	if got := tt.sample(t, "ipdv_seconds_count", "alpha"); got != ipdv+10 {
		t.Fatalf("IPDV samples %v after 10 more in order, want %v: the live session stopped counting", got, ipdv+10)
	}
	if j := tt.sample(t, "jitter_seconds", "alpha"); j == 0 {
		t.Fatal("jitter 0: the live session is no longer the current one")
	}
}

// TestReplayAfterRestart: a receiver that restarted meets a live session
// at sequence number 65,000; a replay of the session's datagram 0 (sent 65
// seconds earlier, by the sender's clock) arrives within the waiting time.
// It is late: it does not extend the stream down to 0, which would declare
// 64,999 lost. A datagram sent just before the first, arriving after it,
// still extends the stream as reordered.
func TestReplayAfterRestart(t *testing.T) {
	tt := newTable(t, Options{}) // a 100 ms waiting time
	const first = 65000
	tt.handle(probe(t, 1, first, first), at(0)) // sent at 65 s on its clock
	tt.handle(probe(t, 1, first-1, first-1), at(1))
	tt.handle(probe(t, 1, 0, 0), at(2)) // the replay
	tt.handle(probe(t, 1, first+1, first+1), at(3))
	tt.Housekeep(at(1000))
	got := exported(t, tt.observed, "alpha")
	if got != (streamCounts{received: 3, reordered: 1, late: 1}) {
		t.Fatalf("counted %+v, want 3 received (one reordered), 1 late, nothing lost", got)
	}
}

// TestForgedJumpAhead: in a live stream of 1,000 datagrams a second, one
// forged datagram 2^31 − 2 ahead, and one forged goodbye announcing 2^31
// more, are implausible for the stream's rate: the datagram is a stray, the
// goodbye ignored, and the real stream is counted exactly: nothing lost,
// nothing late.
func TestForgedJumpAhead(t *testing.T) {
	tt := newTable(t, Options{})
	c := &script{tt: tt}
	for seq := range uint64(100) {
		c.send(t, time.Millisecond, seq)
	}
	c.send(t, time.Millisecond, 99+(1<<31)-2) // forged
	c.tt.handle(datagram(t, "real", 1, 100+(1<<31), wire.FlagGoodbye), c.at())
	for seq := uint64(100); seq < 200; seq++ {
		c.send(t, time.Millisecond, seq)
	}
	c.settle()
	if got := exported(t, tt.observed, "real"); got != (streamCounts{received: 200, stray: 1}) {
		t.Fatalf("counted %+v, want 200 received, 1 stray and nothing else", got)
	}
}
