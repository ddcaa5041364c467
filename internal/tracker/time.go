package tracker

import (
	"math"
	"math/bits"
)

// Time: the send clocks of settled numbers, known where a datagram said
// it (a gap's bounds, the head) and interpolated between, for the span of
// each loss period and the seconds each number was sent in.

// noClock marks a send clock that is not known.
const noClock = math.MinInt64

// point is a number and its send clock.
type point struct {
	x uint64
	c int64
}

// clocks follows the send clocks of a segment's settled numbers, in order.
type clocks struct {
	last point // the last number accounted and its clock
	// next are the known points ahead of last that the settling in
	// progress reaches; between two, clocks are interpolated.
	next [3]point
	// The second being accounted, by the send clock, and how many of the
	// numbers sent in it were settled and lost; open: there is one.
	sec         int64
	total, lost uint64
	n           uint8 // of next
	open        bool
	// runFrom is the clock of the number before the open loss run: last,
	// as only a loss reads it.
	runFrom int64
}

// ahead sets the known points the next settling reaches, in order: those
// not past the last accounted number are left out.
func (k *clocks) ahead(pts []point) {
	k.n = 0
	x := k.last.x
	for _, p := range pts {
		if p.x > x {
			k.next[k.n] = p
			k.n++
			x = p.x
		}
	}
}

// at is the send clock of x, at or past the last accounted number and not
// past the last known point ahead: interpolated on the line between the
// known points around it.
func (k *clocks) at(x uint64) int64 {
	from := k.last
	for i := range int(k.n) {
		to := k.next[i]
		if x <= to.x {
			return interpolate(from, to, x)
		}
		from = to
	}
	return noClock
}

// interpolate is the clock of x on the line from a to b, a.x ≤ x ≤ b.x;
// outside, the nearer end's.
func interpolate(a, b point, x uint64) int64 {
	switch {
	case x >= b.x:
		return b.c
	case x <= a.x:
		return a.c
	case a.c == noClock || b.c == noClock:
		return noClock
	case b.c <= a.c:
		return a.c
	}
	return a.c + int64(mulDiv(uint64(b.c-a.c), x-a.x, b.x-a.x))
}

// mulDiv is a·b/c rounded down; the largest uint64 where that does not
// fit (no caller asks for one).
func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, c)
	return q
}

// passTo accounts the numbers after the last one accounted up to x, all
// lost or all received, through the known points on the way.
func (t *Tracker) passTo(x uint64, lost bool) {
	k := &t.clocks
	for k.n > 0 && k.next[0].x <= x {
		p := k.next[0]
		t.account(p, p.x-k.last.x, lost)
		copy(k.next[:], k.next[1:k.n])
		k.n--
	}
	if x > k.last.x {
		t.account(point{x, k.at(x)}, x-k.last.x, lost)
	}
}

// second is the second of the send clock c falls in.
func second(c int64) int64 {
	s := c / 1e9
	if c < 0 && s*1e9 != c {
		s--
	}
	return s
}

// account takes the n numbers up to and including to.x, after the last
// one accounted, all lost or all received, into the seconds they were
// sent in: the clock of each is interpolated between the last one's and
// to's. Numbers whose clock is not known are in no second.
func (t *Tracker) account(to point, n uint64, lost bool) {
	k := &t.clocks
	from := k.last
	k.last = to
	if to.c == noClock || n == 0 {
		return
	}
	switch {
	case from.c == noClock: // only to.x itself was sent at a known time
		t.count(second(to.c), 1, lost)
		return
	case to.c <= from.c || n == 1:
		t.count(second(to.c), n, lost)
		return
	}
	// Number i of the n (1 … n) is sent at from.c + d·i/n (rounded down).
	d := uint64(to.c - from.c)
	for i := uint64(1); i <= n; {
		s := second(from.c + int64(mulDiv(d, i, n)))
		// The last i sent before the next second: d·i/n < next − from.c.
		j := n
		if next := (s + 1) * 1e9; next-from.c <= int64(d) {
			j = min(n, mulDivCeil(uint64(next-from.c), n, d)-1)
		}
		t.count(s, j-i+1, lost)
		i = j + 1
	}
}

// mulDivCeil is a·b/c rounded up, for a quotient that fits in 64 bits.
func mulDivCeil(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return math.MaxUint64
	}
	q, r := bits.Div64(hi, lo, c)
	if r != 0 {
		q++
	}
	return q
}

// count takes n numbers sent in second s, lost or not. A later second
// decides the one before it: settling goes in sequence order, so every
// number sent in it is settled.
func (t *Tracker) count(s int64, n uint64, lost bool) {
	k := &t.clocks
	if !k.open || s > k.sec {
		t.closeSecond()
		k.sec, k.open = s, true
	}
	k.total += n
	if lost {
		k.lost += n
	}
}

// closeSecond decides the second being accounted, if any: unavailable if
// more than half its numbers were lost.
func (t *Tracker) closeSecond() {
	k := &t.clocks
	if k.open && 2*k.lost > k.total {
		t.counts.Unavailable++
		if t.sink != nil {
			t.sink.Unavailable()
		}
	}
	k.open, k.total, k.lost = false, 0, 0
}
