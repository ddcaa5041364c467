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
	return s, s.targets[0]
}

// TestSendErrorsUseNoSequenceNumber: every other write fails, yet the
// datagrams that left carry 0, 1, 2, … without a hole, and the goodbye
// carries the last of them.
func TestSendErrorsUseNoSequenceNumber(t *testing.T) {
	conn := &fakeConn{fail: func(n int) bool { return n%2 == 1 }}
	s, tg := newTarget(t, conn)
	for range 20 {
		tg.send(time.Now())
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
