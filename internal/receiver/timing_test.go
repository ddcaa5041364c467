package receiver

import (
	"math"
	"testing"

	"github.com/udpprobe/udpprobe/internal/socket"
)

const ms = int64(1e6)

// TestJitterRecursion checks the estimator against RFC 3550's recursion
// computed by hand for alternating 10 and 30 ms transit times: |D| is 20 ms
// every time, so J_n = 20 ms · (1 − (15/16)^n).
func TestJitterRecursion(t *testing.T) {
	var tm timing
	if v := tm.inOrder(0, 0, 10*ms); v.ok {
		t.Fatalf("first datagram gave a sample: %+v", v)
	}
	for n := 1; n <= 200; n++ {
		transit := 10 * ms
		if n%2 == 1 {
			transit = 30 * ms
		}
		send := int64(n) * 40 * ms
		v := tm.inOrder(uint64(n), send, send+transit)
		want := 20 * float64(ms) * (1 - math.Pow(15.0/16, float64(n)))
		if !v.ok || !v.consec || v.ipdv != 20*ms || math.Abs(v.jitter-want) > 1e-6*want {
			t.Fatalf("n=%d: %+v, want jitter %.0f ns and |IPDV| 20 ms", n, v, want)
		}
	}
}

// TestJitterIgnoresConstantOffsetAndGaps: a constant clock offset between
// the hosts changes nothing; a missing sequence number gives a jitter sample
// but no IPDV sample.
func TestJitterIgnoresConstantOffsetAndGaps(t *testing.T) {
	var a, b timing
	const offset = 3_600_000 * ms
	a.inOrder(1, 0, 5*ms)
	b.inOrder(1, offset, 5*ms)
	va := a.inOrder(3, 20*ms, 27*ms) // seq 2 missing
	vb := b.inOrder(3, offset+20*ms, 27*ms)
	if va != vb || !va.ok || va.consec || va.ipdv != 2*ms || va.jitter != float64(2*ms)/16 {
		t.Fatalf("with offset %+v, without %+v", vb, va)
	}
}

// TestArrivalSurvivesWallClockStep simulates a receiver whose wall clock
// steps back by an hour between two datagrams 10 ms apart. The one-way delay
// of the second one is taken from the wall clock and turns negative (the
// receiver counts that as clock skew), but the monotonic arrival time that
// jitter uses moves by exactly 10 ms, so jitter does not spike.
func TestArrivalSurvivesWallClockStep(t *testing.T) {
	const hour = 3600_000 * ms
	wall0, mono0 := int64(1_700_000_000_000)*ms, 50*ms
	var tm timing
	// First datagram: kernel stamp 100 µs before the read.
	w1, m1 := socket.Arrival(socket.Control{Time: wall0 - ms/10, HasTime: true}, wall0, mono0)
	if w1 != wall0-ms/10 || m1 != mono0-ms/10 {
		t.Fatalf("arrival = %d, %d", w1, m1)
	}
	tm.inOrder(0, 0, m1)
	// The wall clock steps back an hour; the next datagram, sent 10 ms later,
	// is stamped and read on the stepped clock.
	wall2, mono2 := wall0+10*ms-hour, mono0+10*ms
	w2, m2 := socket.Arrival(socket.Control{Time: wall2 - ms/10, HasTime: true}, wall2, mono2)
	if w2-(wall0+10*ms) >= 0 {
		t.Fatalf("the stepped wall clock should make the delay negative: %d", w2-(wall0+10*ms))
	}
	v := tm.inOrder(1, 10*ms, m2)
	if v.ipdv != 0 || v.jitter != 0 {
		t.Fatalf("a wall-clock step leaked into jitter: %+v", v)
	}
}

// TestArrivalFallsBack: without a kernel timestamp, or with one that a clock
// step between stamp and read made implausible, the read time is used.
func TestArrivalFallsBack(t *testing.T) {
	for _, c := range []socket.Control{
		{},
		{Time: 2_000 * ms, HasTime: true},  // after the read: the clock stepped back
		{Time: -5_000 * ms, HasTime: true}, // seconds before the read: stepped forward
	} {
		if w, m := socket.Arrival(c, 1_000*ms, 7*ms); w != 1_000*ms || m != 7*ms {
			t.Errorf("%+v: arrival %d, %d; want the read time", c, w, m)
		}
	}
}
