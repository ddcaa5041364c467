package tracker

import "math/bits"

// Settling: deciding that missing sequence numbers are lost, when their
// waiting time passes (Expire), when they leave the window (settleBelow),
// when the sender says goodbye or is gone (Goodbye, Settle), and grouping
// them into loss periods as they are decided.

// settleBelow settles every sequence number below limit, which may lie beyond
// head when a jump leaves part of a gap outside the window at once.
func (t *Tracker) settleBelow(limit uint64) {
	for t.gaps.len() > 0 && t.gaps.front().end <= limit {
		t.gaps.pop()
	}
	if t.gaps.len() > 0 && t.gaps.front().start < limit {
		t.gaps.front().start = limit
	}
	t.settleTo(min(limit, t.head))
	if limit > t.head {
		t.lose(limit - t.head)
		t.tail = limit
	}
}

// settleTo settles [tail, limit): received numbers end the open loss run,
// missing ones are lost and extend it.
func (t *Tracker) settleTo(limit uint64) {
	var lost uint64
	for s := t.tail; s < limit; {
		idx := s & t.mask
		word := t.bits[idx>>6] >> (idx & 63)
		n := min(64-idx&63, limit-s) // bits left in this word and range
		if n < 64 {
			word &= 1<<n - 1
		}
		for n > 0 {
			if word&1 == 0 {
				z := min(uint64(bits.TrailingZeros64(word)), n) // a run of missing numbers
				lost += z
				t.lossRun += z
				s, n, word = s+z, n-z, word>>(z&63)
				continue
			}
			o := min(uint64(bits.TrailingZeros64(^word)), n) // a run of received numbers
			t.endRun()
			s, n, word = s+o, n-o, word>>(o&63)
		}
	}
	if limit > t.tail {
		t.tail = limit
	}
	t.report(lost)
}

func (t *Tracker) lose(n uint64) {
	t.lossRun += n
	t.report(n)
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

func (t *Tracker) endRun() {
	t.gap(t.lossRun)
	t.lossRun = 0
}

// gap reports a finished loss period of length n, if any.
func (t *Tracker) gap(n uint64) {
	if n == 0 {
		return
	}
	t.counts.Gaps++
	if t.sink != nil {
		t.sink.Gap(n)
	}
}

// settlePre settles [low, first) on its own: its runs end at first, which was
// received.
func (t *Tracker) settlePre() {
	t.preOpen = false
	var lost, run uint64
	for s := t.low; s < t.first; s++ {
		if t.has(s) {
			t.gap(run)
			run = 0
			continue
		}
		lost++
		run++
	}
	t.gap(run)
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

func (t *Tracker) expireFront() {
	t.gaps.pop()
	next := t.head
	if t.gaps.len() > 0 {
		next = t.gaps.front().start
	}
	t.settleTo(next)
}

// Origin tells the tracker where the stream begins, where that is known
// (a reflector numbers its replies from 0): the numbers from origin up to
// the first one that arrived are pending from its arrival, and lost unless
// they come within the waiting time, as numbers below the first one are.
// Call it after the first Observe; numbers beyond the window are not
// placed.
func (t *Tracker) Origin(origin uint64) {
	if !t.started || origin >= t.low || t.head-origin > t.window {
		return
	}
	t.lower(origin)
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
	t.gaps.reset()
	t.settleTo(t.head)
	if t.closing {
		t.closing = false
		if t.last >= t.head {
			t.lose(t.last + 1 - t.head)
			end := t.last + 1
			t.clearRange(max(t.head, end-min(t.window, end)), end)
			t.head, t.tail = end, end
		}
	}
	t.endRun()
}
