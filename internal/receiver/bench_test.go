package receiver

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

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

func newLoopback(tb testing.TB, r *testReceiver, batch int) *loopback {
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
	if n, err := l.w.Write(l.bufs, nil); n != len(l.bufs) || err != nil {
		tb.Fatalf("sent %d of %d: %v", n, len(l.bufs), err)
	}
}

// take reads and receives n datagrams, as Run does.
func (r *Receiver) take(tb testing.TB, n int) {
	for n > 0 {
		got, _, err := r.read()
		if err != nil {
			tb.Fatal(err)
		}
		n -= got
	}
}

// TestReceivePathAllocatesNothing: the whole path from the socket, batch
// read included, allocates nothing per datagram, and counts every one.
// A read that has to wait for the rest of a batch blocks in poll(2), and
// on a loaded machine under the race detector the runtime may start a
// thread for the processor it hands off, which counts as allocations that
// are not the path's. So the fewest of three measurements is taken: an
// allocation of the path shows in every one.
func TestReceivePathAllocatesNothing(t *testing.T) {
	r := newTestReceiver(t, Options{})
	defer r.in.Close()
	r.in.SetDeadline(time.Now().Add(10 * time.Second))
	l := newLoopback(t, r, 32)
	l.send(t)
	r.take(t, 32)
	allocs := math.Inf(1)
	for range 3 {
		allocs = min(allocs, testing.AllocsPerRun(100, func() {
			l.send(t)
			r.take(t, 32)
		}))
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of 32", allocs)
	}
	if got := r.sample(t, "packets_received_total", "alpha"); got != float64(l.seq) {
		t.Fatalf("received %v of %d", got, l.seq)
	}
}

// BenchmarkReceive is the receive path from the socket in batches of 64:
// recvmmsg and handle, per datagram. Sending the batch is not timed.
func BenchmarkReceive(b *testing.B) {
	r := newTestReceiver(b, Options{})
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

// TestReflectingNeverHolds: a reflecting receiver answers at once, so it
// never holds between reads (socket.Pacer).
func TestReflectingNeverHolds(t *testing.T) {
	r := newTestReceiver(t, Options{Reflect: true, ReflectRate: 10})
	defer r.in.Close()
	if r.pace.Holds() {
		t.Fatal("a reflecting receiver holds between reads")
	}
}

// BenchmarkHandleMany is BenchmarkHandle/timing for a thousand peers heard
// in turn, 10 µs apart (100/s each, 100,000/s in all, as a mesh node or
// the bench's fan-out receiver hears them): each peer's memory, its
// tracker, histograms and counts, is cold by its next datagram. One op is
// one datagram.
func BenchmarkHandleMany(b *testing.B) {
	const peers = 1000
	r := newTestReceiver(b, Options{MaxPeers: peers})
	defer r.in.Close()
	bufs := make([][]byte, peers)
	for i := range bufs {
		h := wire.Header{Name: fmt.Appendf(nil, "peer%d", i), Target: []byte(testTarget), Session: 1}
		bufs[i] = make([]byte, wire.MinSize(len(h.Name), len(h.Target)))
		if err := wire.Encode(bufs[i], &h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for n := int64(0); b.Loop(); n++ {
		buf, sent := bufs[n%peers], n*10_000 // ns
		wire.PutFlags(buf, 0)
		wire.PutSeq(buf, uint64(n/peers))
		wire.PutSendTime(buf, wall0+sent, sent)
		wire.Seal(buf)
		arrived := sent + int64(time.Millisecond)
		r.table.Handle(buf, netip.AddrPort{}, Instant{Wall: wall0 + arrived, Mono: arrived})
	}
	if n := r.sample(b, "packets_received_total", "peer0"); n < 1 {
		b.Fatalf("peer0 received %v: the loop did not reach the peers", n)
	}
}
