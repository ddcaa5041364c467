package sender

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/testkit/fakeclock"
	"github.com/udpprobe/udpprobe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeConn records what was written and fails or stalls on demand.
type fakeConn struct {
	net.Conn
	clock  *fakeclock.Clock
	mu     sync.Mutex
	writes int
	fail   func(n int) bool          // the n-th write (from 0) fails
	stall  func(n int) time.Duration // the n-th write takes this long on the clock
	got    []wire.Header
}

func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	n := c.writes
	c.writes++
	c.mu.Unlock()
	if c.stall != nil {
		c.clock.Advance(c.stall(n))
	}
	if c.fail != nil && c.fail(n) {
		return 0, errors.New("connection refused")
	}
	var h wire.Header
	if err := wire.Decode(b, &h); err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.got = append(c.got, h)
	c.mu.Unlock()
	return len(b), nil
}

func (c *fakeConn) Close() error { return nil }

// fakeOut sends batches through a fakeConn one datagram at a time, as the
// kernel does, and records the batch sizes.
type fakeOut struct {
	c       *fakeConn
	batches []int
	cost    time.Duration // what one call takes on the clock
}

func (o *fakeOut) Write(bufs [][]byte) (int, error) {
	o.batches = append(o.batches, len(bufs))
	o.c.clock.Advance(o.cost)
	for i, b := range bufs {
		if _, err := o.c.Write(b); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (c *fakeConn) ReadMsgUDPAddrPort(_, _ []byte) (int, int, int, netip.AddrPort, error) {
	return 0, 0, 0, netip.AddrPort{}, net.ErrClosed
}

// t0 is where the tests' fake clocks start.
var t0 = time.Unix(1_700_000_000, 0)

// newTarget is a sender with one target writing to conn, on a fake clock.
func newTarget(t *testing.T, conn *fakeConn) (*Sender, *target) {
	t.Helper()
	if conn.clock == nil {
		conn.clock = fakeclock.New(t0)
	}
	s, err := New(Options{Targets: []string{"127.0.0.1:9"}, Rate: 1000, PayloadSize: 80, Name: "me",
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a"), Clock: conn.clock})
	if err != nil {
		t.Fatal(err)
	}
	s.targets[0].conn.Close()
	s.targets[0].conn = conn
	s.targets[0].out = &fakeOut{c: conn}
	return s, s.targets[0]
}

// TestSendErrorsUseNoSequenceNumber: every other write fails, yet the
// datagrams that left carry 0, 1, 2, … without a hole, and the goodbye
// carries the last of them.
func TestSendErrorsUseNoSequenceNumber(t *testing.T) {
	conn := &fakeConn{fail: func(n int) bool { return n%2 == 1 }}
	s, tg := newTarget(t, conn)
	for range 20 {
		tg.send([]time.Time{t0})
	}
	tg.goodbye()
	if got := testutil.ToFloat64(tg.m.PacketsSent); got != 10 {
		t.Errorf("sent %v, want 10", got)
	}
	if got := testutil.ToFloat64(tg.m.SendErrors); got != 10+1 { // one goodbye write fails too
		t.Errorf("send errors %v, want 11", got)
	}
	var data, byes []uint64
	for _, h := range conn.got {
		if h.Session != s.Session() || string(h.Name) != "me" {
			t.Fatalf("header %+v", h)
		}
		if h.Goodbye() {
			byes = append(byes, h.Seq)
			continue
		}
		data = append(data, h.Seq)
	}
	for i, seq := range data {
		if seq != uint64(i) {
			t.Fatalf("sequence numbers %v have a hole", data)
		}
	}
	if len(data) != 10 || len(byes) != GoodbyeCopies-1 || byes[0] != 9 || byes[1] != 9 {
		t.Fatalf("data %v, goodbyes %v", data, byes)
	}
}

func TestNoGoodbyeWithoutData(t *testing.T) {
	conn := &fakeConn{}
	_, tg := newTarget(t, conn)
	tg.goodbye()
	if len(conn.got) != 0 {
		t.Fatalf("sent %d datagrams", len(conn.got))
	}
}

// runFor runs tg at rate until its clock has moved on by d.
func runFor(tg *target, conn *fakeConn, rate float64, d time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn.clock.At(conn.clock.Now().Add(d), cancel)
	tg.run(ctx, rate)
}

// TestStallSkipsSlots: a write that blocks for 100 ms at 1000/s leaves the
// sender more than the catch-up window behind, so it skips and counts slots
// instead of bursting them, and numbers stay contiguous. Slot 10 is sent at
// 10 ms and the write returns at 110 ms: slot 11 is 99 ms late, 20 ms of
// which the catch-up window absorbs, so 79 slots are skipped.
func TestStallSkipsSlots(t *testing.T) {
	conn := &fakeConn{stall: func(n int) time.Duration {
		if n == 10 {
			return 100 * time.Millisecond
		}
		return 0
	}}
	_, tg := newTarget(t, conn)
	runFor(tg, conn, 1000, 300*time.Millisecond)
	if missed := testutil.ToFloat64(tg.m.MissedSlots); missed != 79 {
		t.Errorf("missed %v slots, want 79", missed)
	}
	data := 0
	for i, h := range conn.got {
		if h.Goodbye() {
			continue
		}
		if h.Seq != uint64(i) {
			t.Fatalf("datagram %d has sequence %d", i, h.Seq)
		}
		data++
	}
	// Slots 0 to 300 are due in 300 ms; 79 were skipped.
	if data != 301-79 {
		t.Errorf("%d datagrams sent, want %d", data, 301-79)
	}
}

// TestNewRejectsRate: a sender cannot run without a rate its schedule can
// keep, whoever configured it.
func TestNewRejectsRate(t *testing.T) {
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1), 2e9} {
		_, err := New(Options{Targets: []string{"127.0.0.1:9"}, Rate: rate, PayloadSize: 80, Name: "me",
			Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a")})
		if err == nil || !strings.Contains(err.Error(), "rate") {
			t.Errorf("rate %v: error %v, want one about the rate", rate, err)
		}
	}
}

func TestNewFailsOnBadTarget(t *testing.T) {
	_, err := New(Options{Targets: []string{"no-such-host.invalid:1"}, Rate: 1, PayloadSize: 80, Name: "me",
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a")})
	if err == nil {
		t.Fatal("no error for an unresolvable target")
	}
}

// TestSchedule: a batch holds the due slot and the later slots already due,
// never one whose time has not come, and never more than a batch; slots
// more than the catch-up window behind are skipped, exactly.
func TestSchedule(t *testing.T) {
	for _, rate := range []float64{10, 1e3, 3e4, 1e5, 3e5, 1e6} {
		for _, k := range []int64{0, 1, 7, 12345} {
			for _, after := range []time.Duration{0, 1, time.Microsecond, 10 * time.Microsecond, 333 * time.Microsecond, 15 * time.Millisecond} {
				s := newSchedule(t0, rate, MaxBatch)
				s.next = k
				now := s.due(k).Add(after)
				dues, skipped := s.take(now)
				if skipped != 0 || len(dues) == 0 || len(dues) > MaxBatch || !dues[0].Equal(s.due(k)) {
					t.Fatalf("rate %v, slot %d, now +%v: dues %v, %d skipped", rate, k, after, dues, skipped)
				}
				for i, d := range dues {
					if !d.Equal(s.due(k+int64(i))) || d.After(now) {
						t.Fatalf("rate %v, slot %d, now +%v: entry %d is %v, want slot %d's due time %v, not after %v",
							rate, k, after, i, d, k+int64(i), s.due(k+int64(i)), now)
					}
				}
				if next := s.due(s.next); s.next != k+int64(len(dues)) || len(dues) < MaxBatch && !next.After(now) {
					t.Fatalf("rate %v, slot %d, now +%v: %d slots, but the next (%v) is due too", rate, k, after, len(dues), next)
				}
			}
		}
	}
	for _, c := range []struct {
		rate    float64
		behind  time.Duration // past slot 0's due time
		skipped int64
		batch   int
	}{
		{1000, 20 * time.Millisecond, 0, MaxBatch},                      // the catch-up window: nothing skipped
		{1000, 20*time.Millisecond + 999*time.Microsecond, 0, MaxBatch}, // less than an interval beyond it
		{1000, 21 * time.Millisecond, 1, MaxBatch},
		{1000, 120 * time.Millisecond, 100, MaxBatch},
		{10, 150 * time.Millisecond, 0, 2},    // a 100 ms interval is its own window: slots 0 and 1
		{10, 250 * time.Millisecond, 1, 2},    // slot 0 skipped; 1 and 2 due
		{1e6, time.Second, 980_000, MaxBatch}, // a second behind: one batch, not a burst
	} {
		s := newSchedule(t0, c.rate, MaxBatch)
		dues, skipped := s.take(t0.Add(c.behind))
		if skipped != c.skipped || len(dues) != c.batch || !dues[0].Equal(s.due(c.skipped)) {
			t.Errorf("rate %v, %v behind: %d skipped, a batch of %d from %v; want %d skipped and %d from slot %d",
				c.rate, c.behind, skipped, len(dues), dues[0].Sub(t0), c.skipped, c.batch, c.skipped)
		}
	}
}

// TestRefusalInBatch: the kernel refuses the third datagram of a batch of
// five. It uses no sequence number, the two after it are renumbered and
// sent, and every slot is accounted for once.
func TestRefusalInBatch(t *testing.T) {
	conn := &fakeConn{fail: func(n int) bool { return n == 2 }}
	_, tg := newTarget(t, conn)
	tg.send([]time.Time{t0, t0, t0, t0, t0})
	if got := testutil.ToFloat64(tg.m.PacketsSent); got != 4 {
		t.Errorf("sent %v, want 4", got)
	}
	if got := testutil.ToFloat64(tg.m.SendErrors); got != 1 {
		t.Errorf("send errors %v, want 1", got)
	}
	var lateness dto.Metric
	if err := tg.m.ScheduleLateness.(prometheus.Metric).Write(&lateness); err != nil {
		t.Fatal(err)
	}
	if c := lateness.GetHistogram().GetSampleCount(); c != 5 {
		t.Errorf("lateness observed %d times, want 5 (one per slot)", c)
	}
	if out := tg.out.(*fakeOut); len(out.batches) != 2 || out.batches[0] != 5 || out.batches[1] != 2 {
		t.Errorf("batches %v, want [5 2]", out.batches)
	}
	for i, h := range conn.got {
		if h.Seq != uint64(i) {
			t.Fatalf("datagram %d has sequence %d", i, h.Seq)
		}
	}
	if tg.seq != 4 || len(conn.got) != 4 {
		t.Fatalf("next sequence %d after %d datagrams, want 4 after 4", tg.seq, len(conn.got))
	}
}

// TestHighRateBatches: at 100,000 datagrams/s, with each write call taking
// 25 µs, the sender batches the slots its wake-ups find due and keeps up,
// numbers stay contiguous, and no datagram is stamped before its slot
// (slot ≥ sequence number, skipped slots only add).
func TestHighRateBatches(t *testing.T) {
	conn := &fakeConn{}
	_, tg := newTarget(t, conn)
	tg.out.(*fakeOut).cost = 25 * time.Microsecond
	runFor(tg, conn, 1e5, 100*time.Millisecond)
	var data int
	for _, h := range conn.got {
		if h.Goodbye() {
			continue
		}
		if h.Seq != uint64(data) {
			t.Fatalf("datagram %d has sequence %d", data, h.Seq)
		}
		if due := tg.sched.due(int64(h.Seq)).Sub(tg.epoch); h.SendClock < int64(due) {
			t.Fatalf("sequence %d stamped at %v, before its slot at %v", h.Seq, time.Duration(h.SendClock), due)
		}
		data++
	}
	largest := 0
	for _, n := range tg.out.(*fakeOut).batches {
		largest = max(largest, n)
	}
	if data < 1000 || largest < 2 || largest > MaxBatch {
		t.Fatalf("%d datagrams in batches of up to %d; want batches of 2 to %d", data, largest, MaxBatch)
	}
	if missed := testutil.ToFloat64(tg.m.MissedSlots); missed != 0 {
		t.Fatalf("%v slots missed; a sender whose writes keep up misses none", missed)
	}
	t.Logf("%d datagrams, batches up to %d", data, largest)
}
