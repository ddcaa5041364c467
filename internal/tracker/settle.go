package tracker

import "math/bits"

// Settling: deciding that missing sequence numbers are lost, when their
// waiting time passes (Expire), when they leave the window (settleBelow),
// when the sender says goodbye or is gone (Goodbye, Settle), and grouping
// them into loss periods as they are decided. Gaps are settled one by
// one, in order, each with the send clocks around it (time.go).

// settleBelow settles every sequence number below limit, which may lie
// beyond head when a jump leaves part of a gap outside the window at once;
// after is the datagram making the jump, which the numbers beyond head
// were sent before.
func (t *Tracker) settleBelow(limit uint64, after point) {
	for t.gaps.len() > 0 && t.gaps.front().end <= limit {
		t.expireFront()
	}
	if t.gaps.len() > 0 && t.gaps.front().start < limit {
		g := t.gaps.front() // a gap the limit cuts: its lower part goes
		c := interpolate(point{g.start - 1, g.before}, point{g.end, g.after}, limit-1)
		t.settleTo(limit, point{g.start - 1, g.before}, point{limit - 1, c})
		g.start, g.before = limit, c
		return
	}
	if limit > t.head { // every gap is settled: tail is head
		n := limit - t.head
		t.startRun()
		t.lossRun += n
		t.report(n)
		t.passToPoint(point{limit - 1, interpolate(point{t.head - 1, t.headClock}, after, limit-1)}, true)
		t.tail = limit
	}
}

// settleTo settles [tail, limit): received numbers end the open loss run,
// missing ones are lost and extend it. ahead are the send clocks known in
// the range, the last one limit-1's.
func (t *Tracker) settleTo(limit uint64, ahead ...point) {
	t.clocks.ahead(ahead)
	var lost uint64
	for s := t.tail; s < limit; {
		idx := s & t.mask()
		word := t.bits[idx>>6] >> (idx & 63)
		n := min(64-idx&63, limit-s) // bits left in this word and range
		if n < 64 {
			word &= 1<<n - 1
		}
		for n > 0 {
			if word&1 == 0 {
				z := min(uint64(bits.TrailingZeros64(word)), n) // a run of missing numbers
				t.startRun()
				lost += z
				t.lossRun += z
				t.passTo(s+z-1, true)
				s, n, word = s+z, n-z, word>>(z&63)
				continue
			}
			o := min(uint64(bits.TrailingZeros64(^word)), n) // a run of received numbers
			if t.lossRun > 0 {
				t.endRun(t.clocks.at(s))
			}
			t.passTo(s+o-1, false)
			s, n, word = s+o, n-o, word>>(o&63)
		}
	}
	if limit > t.tail {
		t.tail = limit
	}
	t.report(lost)
}

// passToPoint accounts up to p, a known point.
func (t *Tracker) passToPoint(p point, lost bool) {
	t.clocks.ahead([]point{p})
	t.passTo(p.x, lost)
}

// startRun notes where a loss run begins, if none is open: after the last
// number accounted.
func (t *Tracker) startRun() {
	if t.lossRun == 0 {
		t.clocks.runFrom = t.clocks.last.c
	}
}

func (t *Tracker) report(lost uint64) {
	if lost == 0 {
		return
	}
	t.counts.Lost += lost
	if t.sink != nil {
		t.sink.Lost(lost)
	}
}

// endRun ends the open loss run, if any, at a datagram sent at end.
func (t *Tracker) endRun(end int64) {
	span := int64(-1)
	if from := t.clocks.runFrom; from != noClock && end != noClock {
		span = max(end-from, 0)
	}
	t.gap(t.lossRun, span)
	t.lossRun = 0
}

// gap reports a finished loss period of length n, if any.
func (t *Tracker) gap(n uint64, span int64) {
	if n == 0 {
		return
	}
	t.counts.Gaps++
	if t.sink != nil {
		t.sink.Gap(n, span)
	}
}

// settlePre settles [low, first) on its own: its runs end at first, which was
// received. They are timed by nothing, and in no second: nothing before
// them was received.
func (t *Tracker) settlePre() {
	t.preOpen = false
	var lost, run uint64
	for s := t.low; s < t.first; s++ {
		if t.has(s) {
			t.gap(run, -1)
			run = 0
			continue
		}
		lost++
		run++
	}
	t.gap(run, -1)
	t.report(lost)
}

// Expire settles every gap whose deadline is at or before now.
func (t *Tracker) Expire(now int64) {
	for t.gaps.len() > 0 && t.gaps.front().deadline <= now {
		t.expireFront()
	}
	if t.preOpen && now >= t.firstArrival+t.timeout {
		t.settlePre()
	}
	if t.closing && now >= t.closeAt {
		t.Settle()
	}
}

// expireFront settles the oldest gap, and the received numbers after it up
// to the next one.
func (t *Tracker) expireFront() {
	g := *t.gaps.front()
	t.gaps.pop()
	next := point{t.head, t.headClock}
	if t.gaps.len() > 0 {
		f := t.gaps.front()
		next = point{f.start, f.before}
	}
	t.settleTo(next.x, point{g.start - 1, g.before}, point{g.end, g.after}, point{next.x - 1, next.c})
}

// Origin tells the tracker where the stream begins, where that is known
// (a reflector numbers its replies from 0): the numbers from origin up to
// the first one that arrived are pending from its arrival, and lost unless
// they come within the waiting time, as numbers below the first one are.
// Call it after the first Observe; numbers beyond the window are not
// placed.
func (t *Tracker) Origin(origin uint64) {
	if !t.started || origin >= t.low || t.head-origin > t.window() {
		return
	}
	t.lower(origin)
}

// ObserveFrom is Observe for a stream known to begin at origin (a
// reflector numbers its replies from 0). Origin only ever lowers where a
// segment starts, so it is told as each one starts, at the first datagram
// and at a resync: all that telling it at every datagram would do, without
// reading, at every datagram, a line of the tracker no other one reads.
func (t *Tracker) ObserveFrom(seq uint64, now int64, origin uint64) Result {
	first := !t.started
	r := t.Observe(seq, now)
	if first || r.Resync {
		t.Origin(origin)
	}
	return r
}

// Goodbye records that the sender ended the session after sending last.
// Numbers after the highest seen up to last are lost unless they arrive
// within the waiting time; then the stream is settled. A goodbye
// announcing an implausible jump ahead (see plausible) is ignored: it can
// only be forged.
func (t *Tracker) Goodbye(last uint64, now int64) {
	if !t.started || t.closing || last >= t.head && !t.plausible(last+1-t.head, now) {
		return
	}
	t.closing = true
	t.last = t.head - 1
	if last > t.last {
		t.last = last
	}
	t.closeAt = now + t.timeout
}

// Settle declares every pending sequence number lost now and closes the open
// loss period: for a stream whose sender is gone (restart, expiry, resync) or
// said goodbye. The tracker stays usable.
func (t *Tracker) Settle() {
	if !t.started {
		return
	}
	if t.preOpen {
		t.settlePre()
	}
	for t.gaps.len() > 0 {
		t.expireFront()
	}
	t.settleTo(t.head, point{t.head - 1, t.headClock})
	if t.closing {
		t.closing = false
		if t.last >= t.head {
			// Lost after the last datagram: sent at no known time.
			n := t.last + 1 - t.head
			t.startRun()
			t.lossRun += n
			t.report(n)
			end := t.last + 1
			t.clearRange(max(t.head, end-min(t.window(), end)), end)
			t.head, t.tail = end, end
			t.headClock = noClock
			t.clocks.last = point{end - 1, noClock}
		}
	}
	t.endRun(noClock)
	t.closeSecond()
}
