package sender

import (
	"math/bits"
	"time"
)

// maxWindow bounds the sequence numbers a round-trip tracker holds at once
// (24 bytes each). At rates where the loss timeout spans more, the oldest is
// decided early, as the receiver's tracker does.
const maxWindow = 1 << 20

type slotState uint8

const (
	slotPending  slotState = iota // sent, no reply yet, within the loss timeout
	slotAnswered                  // a reply came within the loss timeout
	slotLost                      // no reply within the loss timeout
	slotLate                      // lost, and then its reply came
)

type slot struct {
	sent  int64  // monotonic ns
	count uint64 // the receiver's count in the reply
	state slotState
}

// rtCounts are a round-trip tracker's cumulative totals.
type rtCounts struct {
	Answered, Late, Duplicated, Invalid uint64
	// Lost is Upstream + Downstream + the losses whose direction is not known
	// yet: those after the last reply, until the next one arrives.
	Lost, Upstream, Downstream uint64
}

// roundTrip follows the replies to one session's datagrams. It does no I/O
// and takes the monotonic time as an argument; the caller serialises calls.
//
// A datagram is lost on the round trip when no reply arrives within the loss
// timeout of its sending (RFC 7680's waiting time, measured from the send
// time, which the sender knows). Each reply carries the receiver's count of
// distinct sequence numbers received so far. Decisions are made in sequence
// order; between two answered sequence numbers a < b, the count difference
// says how many of the lost ones in between reached the receiver (their
// replies were lost: downstream) and how many did not (upstream). The split
// of those after the last reply waits for the next reply, or for the
// goodbye's reply when the session ends.
type roundTrip struct {
	timeout int64
	slots   []slot
	mask    uint64
	next    uint64 // the next sequence number to be sent
	oldest  uint64 // the oldest sequence number not yet decided
	gap     uint64 // lost since the last answered one, direction unknown
	base    uint64 // the receiver's count at the last answered one (running maximum)
	bye     bool   // a reply to the goodbye came
	byeN    uint64 // the count it carried
	c       rtCounts
}

// newRoundTrip sizes the window for rate datagrams per second over the loss
// timeout, with room to spare.
func newRoundTrip(timeout time.Duration, rate float64) *roundTrip {
	need := uint64(rate*timeout.Seconds()) + 64
	size := min(uint64(1)<<bits.Len64(need), maxWindow)
	return &roundTrip{timeout: int64(timeout), slots: make([]slot, size), mask: size - 1}
}

// send registers seq, about to be written at now. Call it before the write,
// so that a reply can never beat it, and unsend if the write fails.
func (r *roundTrip) send(seq uint64, now int64) {
	for seq-r.oldest >= uint64(len(r.slots)) && r.oldest < r.next {
		r.pass() // the window is full: decide the oldest now
	}
	r.slots[seq&r.mask] = slot{sent: now}
	r.next = seq + 1
}

// unsend forgets seq: the kernel refused it, so it was never sent.
func (r *roundTrip) unsend(seq uint64) {
	if r.next == seq+1 {
		r.next = seq
	}
}

// reply takes a reply to seq carrying the receiver's count, arriving at
// now. It returns the round-trip time of a first reply within the timeout.
func (r *roundTrip) reply(seq, count uint64, now int64) (rtt int64, ok bool) {
	r.advance(now)
	switch {
	case seq >= r.next:
		r.c.Invalid++ // never sent
		return 0, false
	case r.next-seq > uint64(len(r.slots)):
		r.c.Late++ // decided long ago
		return 0, false
	}
	s := &r.slots[seq&r.mask]
	switch {
	case seq >= r.oldest && s.state == slotPending:
		s.state, s.count = slotAnswered, count
		r.c.Answered++
		return now - s.sent, true
	case s.state == slotLost:
		s.state = slotLate
		r.c.Late++
	default:
		r.c.Duplicated++
	}
	return 0, false
}

// goodbye takes a reply to the goodbye: the receiver's final count.
func (r *roundTrip) goodbye(count uint64) {
	r.bye = true
	r.byeN = max(r.byeN, count)
}

// advance decides, in sequence order, what the time now allows.
func (r *roundTrip) advance(now int64) {
	for r.oldest < r.next {
		s := &r.slots[r.oldest&r.mask]
		if s.state == slotPending && now-s.sent < r.timeout {
			return
		}
		r.pass()
	}
}

// pass decides the oldest sequence number: lost unless answered.
func (r *roundTrip) pass() {
	s := &r.slots[r.oldest&r.mask]
	r.oldest++
	if s.state != slotAnswered {
		s.state = slotLost
		r.c.Lost++
		r.gap++
		return
	}
	if r.base > s.count+uint64(len(r.slots)) {
		r.base = 0 // the count went far back: the receiver started counting again
	}
	var got uint64 // of the gap, how many the receiver counted
	if s.count > r.base {
		got = min(s.count-r.base-1, r.gap)
	}
	r.split(got)
	r.base = max(r.base, s.count)
}

// split attributes the gap: got of it reached the receiver.
func (r *roundTrip) split(got uint64) {
	r.c.Downstream += got
	r.c.Upstream += r.gap - got
	r.gap = 0
}

// settled reports whether every datagram sent is decided and the goodbye
// was answered: nothing more can arrive that changes the counts.
func (r *roundTrip) settled() bool { return r.oldest == r.next && r.bye }

// finish ends the session: whatever is still pending is lost, and the tail
// is split by the goodbye's count if its reply came.
func (r *roundTrip) finish() {
	for r.oldest < r.next {
		r.pass()
	}
	if r.bye {
		var got uint64
		if r.byeN > r.base {
			got = min(r.byeN-r.base, r.gap)
		}
		r.split(got)
	}
}
