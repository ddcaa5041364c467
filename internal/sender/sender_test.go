package sender

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeConn records what was written and fails or stalls on demand.
type fakeConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	fail   func(n int) bool          // the n-th write (from 0) fails
	stall  func(n int) time.Duration // the n-th write takes this long
	got    []wire.Header
}

func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	n := c.writes
	c.writes++
	c.mu.Unlock()
	if c.stall != nil {
		time.Sleep(c.stall(n))
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
}

func (o *fakeOut) Write(bufs [][]byte) (int, error) {
	o.batches = append(o.batches, len(bufs))
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

func newTarget(t *testing.T, conn *fakeConn) (*Sender, *target) {
	t.Helper()
	s, err := New(Options{Targets: []string{"127.0.0.1:9"}, Rate: 1000, PayloadSize: 64, Name: "me",
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry())})
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
		tg.send([]time.Time{time.Now()})
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

// TestStallSkipsSlots: a write that blocks for 100 ms at 1000/s leaves the
// sender more than the catch-up window behind, so it skips and counts slots
// instead of bursting them, and numbers stay contiguous.
func TestStallSkipsSlots(t *testing.T) {
	conn := &fakeConn{stall: func(n int) time.Duration {
		if n == 10 {
			return 100 * time.Millisecond
		}
		return 0
	}}
	_, tg := newTarget(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	tg.run(ctx, 1000)
	missed := testutil.ToFloat64(tg.m.MissedSlots)
	// 100 ms stalled minus the 20 ms catch-up window is about 80 slots; the
	// bounds leave room for a slow machine without accepting a burst.
	if missed < 40 || missed > 100 {
		t.Errorf("missed %v slots, want about 80", missed)
	}
	for i, h := range conn.got {
		if !h.Goodbye() && h.Seq != uint64(i) {
			t.Fatalf("datagram %d has sequence %d", i, h.Seq)
		}
	}
}

func TestNewFailsOnBadTarget(t *testing.T) {
	_, err := New(Options{Targets: []string{"no-such-host.invalid:1"}, Rate: 1, PayloadSize: 64, Name: "me",
		Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry())})
	if err == nil {
		t.Fatal("no error for an unresolvable target")
	}
}

// TestDueBy: a batch holds the due slot and the later slots already due,
// never one whose time has not come, and never more than a batch.
func TestDueBy(t *testing.T) {
	_, tg := newTarget(t, &fakeConn{})
	tg.start = time.Unix(1000, 0)
	for _, rate := range []float64{10, 1e3, 3e4, 1e5, 3e5, 1e6} {
		tg.rate = rate
		for _, k := range []int64{0, 1, 7, 12345} {
			for _, after := range []time.Duration{0, 1, time.Microsecond, 10 * time.Microsecond, 333 * time.Microsecond, time.Second} {
				now := tg.due(k).Add(after)
				dues := tg.dueBy(k, now)
				if len(dues) == 0 || len(dues) > cap(tg.dues) || !dues[0].Equal(tg.due(k)) {
					t.Fatalf("rate %v, slot %d, now +%v: dues %v", rate, k, after, dues)
				}
				for i, d := range dues {
					if !d.Equal(tg.due(k+int64(i))) || d.After(now) {
						t.Fatalf("rate %v, slot %d, now +%v: entry %d is %v, want slot %d's due time %v, not after %v",
							rate, k, after, i, d, k+int64(i), tg.due(k+int64(i)), now)
					}
				}
				if next := tg.due(k + int64(len(dues))); len(dues) < cap(tg.dues) && !next.After(now) {
					t.Fatalf("rate %v, slot %d, now +%v: %d slots, but the next (%v) is due too", rate, k, after, len(dues), next)
				}
			}
		}
	}
	tg.rate = 1e6
	if n := len(tg.dueBy(0, tg.due(0).Add(time.Second))); n != MaxBatch {
		t.Fatalf("a sender a second behind sends %d at once, want a batch of %d", n, MaxBatch)
	}
}

// TestRefusalInBatch: the kernel refuses the third datagram of a batch of
// five. It uses no sequence number, the two after it are renumbered and
// sent, and every slot is accounted for once.
func TestRefusalInBatch(t *testing.T) {
	conn := &fakeConn{fail: func(n int) bool { return n == 2 }}
	_, tg := newTarget(t, conn)
	now := time.Now()
	tg.send([]time.Time{now, now, now, now, now})
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

// TestHighRateBatches: at 100,000 datagrams/s the sender batches the slots
// its wake-ups find due, numbers stay contiguous, and no datagram is stamped
// before its slot (slot ≥ sequence number, skipped slots only add).
func TestHighRateBatches(t *testing.T) {
	conn := &fakeConn{}
	_, tg := newTarget(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	tg.run(ctx, 1e5)
	var data int
	for _, h := range conn.got {
		if h.Goodbye() {
			continue
		}
		if h.Seq != uint64(data) {
			t.Fatalf("datagram %d has sequence %d", data, h.Seq)
		}
		if due := tg.due(int64(h.Seq)).Sub(tg.epoch); h.SendClock < int64(due) {
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
	t.Logf("%d datagrams, %v slots missed, batches up to %d", data, testutil.ToFloat64(tg.m.MissedSlots), largest)
}
