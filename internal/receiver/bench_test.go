package receiver

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// loopback sends batches of probes from peer "alpha" to a receiver's socket.
type loopback struct {
	w    *socket.Writer
	bufs [][]byte
	seq  int64
}

func newLoopback(tb testing.TB, r *Receiver, batch int) *loopback {
	tb.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	w, err := socket.NewWriter(c, batch)
	if err != nil {
		tb.Fatal(err)
	}
	l := &loopback{w: w}
	for range batch {
		l.bufs = append(l.bufs, probe(tb, 1, 0, 0))
	}
	return l
}

// send writes the next len(l.bufs) sequence numbers.
func (l *loopback) send(tb testing.TB) {
	for _, b := range l.bufs {
		reuse(b, l.seq)
		l.seq++
	}
	if n, err := l.w.Write(l.bufs); n != len(l.bufs) || err != nil {
		tb.Fatalf("sent %d of %d: %v", n, len(l.bufs), err)
	}
}

// take reads and receives n datagrams, as Run does.
func (r *Receiver) take(tb testing.TB, n int) {
	for n > 0 {
		msgs, err := r.in.Read()
		if err != nil {
			tb.Fatal(err)
		}
		now := time.Now()
		for i := range msgs {
			r.receive(&msgs[i], now.UnixNano(), int64(now.Sub(r.epoch)))
		}
		n -= len(msgs)
	}
}

// TestReceivePathAllocatesNothing: the whole path from the socket, batch
// read included, allocates nothing per datagram, and counts every one.
func TestReceivePathAllocatesNothing(t *testing.T) {
	r, _, _ := newTestReceiver(t, Options{})
	defer r.in.Close()
	r.in.SetDeadline(time.Now().Add(10 * time.Second))
	l := newLoopback(t, r, 32)
	l.send(t)
	r.take(t, 32)
	allocs := testing.AllocsPerRun(100, func() {
		l.send(t)
		r.take(t, 32)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of 32", allocs)
	}
	if got := testutil.ToFloat64(r.peers["alpha"].m.Received); got != float64(l.seq) {
		t.Fatalf("received %v of %d", got, l.seq)
	}
}

// BenchmarkReceive is the receive path from the socket in batches of 64:
// recvmmsg and handle, per datagram. Sending the batch is not timed.
func BenchmarkReceive(b *testing.B) {
	r, _, _ := newTestReceiver(b, Options{})
	defer r.in.Close()
	r.in.SetDeadline(time.Now().Add(time.Hour))
	const batch = ReadBatch
	l := newLoopback(b, r, batch)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		l.send(b)
		b.StartTimer()
		r.take(b, batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(l.seq), "ns/datagram")
}

// BenchmarkDecodeTrack is the per-datagram work that decides what became of
// it: decode and verify the header, then classify its sequence number.
func BenchmarkDecodeTrack(b *testing.B) {
	tr := tracker.New(tracker.Options{Timeout: int64(3 * time.Second)})
	buf := probe(b, 1, 0, 0)
	var h wire.Header
	b.ReportAllocs()
	for seq := int64(0); b.Loop(); seq++ {
		wire.PutSeq(buf, uint64(seq))
		wire.Seal(buf)
		if err := wire.Decode(buf, &h); err != nil {
			b.Fatal(err)
		}
		tr.Observe(h.Seq, seq*1e6)
	}
}

// TestHold: the pause after a read that emptied the socket shrinks fourfold
// when more than the budget queued up since the last pause, down to the
// floor, doubles back when little did, up to the maximum, which scales with
// the granted buffer; reflecting receivers never pause.
func TestHold(t *testing.T) {
	r, _, _ := newTestReceiver(t, Options{ReceiveBuffer: 2 << 20})
	defer r.in.Close()
	if r.maxHold != MaxHold/2 || r.hold != r.maxHold || r.budget != 1<<20 {
		t.Fatalf("a 2 MiB buffer holds up to %v from %v with a budget of %d; want %v and 1 MiB", r.maxHold, r.hold, r.budget, MaxHold/2)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel() // pause adapts, then returns at once
	for _, step := range []struct {
		queued int
		want   time.Duration
	}{
		{r.budget + 1, MaxHold / 8},
		{r.budget / 2, MaxHold / 8}, // within the band: unchanged
		{r.budget + 1, MaxHold / 32},
		{10 * r.budget, MaxHold / 128},
		{10 * r.budget, minHold},
		{10 * r.budget, minHold},
		{r.budget/8 - 1, 2 * minHold},
		{0, 4 * minHold},
	} {
		r.queued = step.queued
		r.pause(done)
		if r.hold != step.want || r.queued != 0 {
			t.Fatalf("after %d bytes queued the hold is %v (queued %d), want %v", step.queued, r.hold, r.queued, step.want)
		}
	}
	for range 20 {
		r.pause(done)
	}
	if r.hold != r.maxHold {
		t.Fatalf("an idle receiver holds %v, want the maximum %v", r.hold, r.maxHold)
	}
	rr, _, _ := newTestReceiver(t, Options{Reflect: true, ReflectRate: 10})
	defer rr.in.Close()
	if rr.maxHold != 0 {
		t.Fatalf("a reflecting receiver holds up to %v", rr.maxHold)
	}
}
