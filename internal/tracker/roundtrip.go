package tracker

import "math/bits"

// MaxRoundTripWindow bounds the sequence numbers a RoundTrip holds at once
// (24 bytes each). At rates where the loss timeout spans more, the oldest is
// decided early, as a Tracker does beyond its window.
const MaxRoundTripWindow = 1 << 20

type slotState uint8

const (
	slotPending  slotState = iota // sent, no reply yet, within the loss timeout
	slotAnswered                  // a reply came within the loss timeout
	slotLost                      // no reply within the loss timeout
	slotLate                      // lost, and then its reply came
)

type slot struct {
	sent     int64  // monotonic ns
	count    uint64 // the receiver's count in the reply
	withheld uint64 // the replies the receiver had held back, in the reply
	state    slotState
}

// Report is what a reply says besides the sequence number it answers.
type Report struct {
	// Received and Withheld are the receiver's counts of the session:
	// distinct sequence numbers received in time (UnknownCount where the
	// reply says none), and replies held back.
	Received, Withheld uint64
	// Legs, from a version-5 reply (zero otherwise): the receiver's id
	// for the session, the reply's number among its data replies (in a
	// goodbye's reply, how many it sent), and the sequence numbers it
	// counted lost.
	Session, Number, Lost uint64
}

// RoundTripCounts are a RoundTrip's cumulative totals.
type RoundTripCounts struct {
	// Answered, Lost, Upstream and Downstream first: what a reply reads
	// and writes, within RoundTrip's second cache line.
	Answered uint64
	// Lost is Upstream + Downstream + the losses whose direction is not
	// known: those of a gap no reply has closed within a loss timeout of
	// its first loss (a dead path), or that the session ended with.
	Lost, Upstream, Downstream uint64
	Late, Duplicated, Invalid  uint64
	// Withheld are replies the receiver held back (its reply rate limit),
	// as its later replies report: not lost in either direction.
	Withheld uint64
}

// Add is the sum of two sets of totals: those of a target's flows.
func (c RoundTripCounts) Add(d RoundTripCounts) RoundTripCounts {
	return RoundTripCounts{Answered: c.Answered + d.Answered, Late: c.Late + d.Late, Duplicated: c.Duplicated + d.Duplicated,
		Invalid: c.Invalid + d.Invalid, Lost: c.Lost + d.Lost, Upstream: c.Upstream + d.Upstream,
		Downstream: c.Downstream + d.Downstream, Withheld: c.Withheld + d.Withheld}
}

// ReplyResult is returned by Reply.
type ReplyResult struct {
	Outcome ReplyOutcome
	RTT     int64 // ns, for an Answered reply
}

// ReplyOutcome is what became of one reply.
type ReplyOutcome uint8

// Reply outcomes.
const (
	ReplyAnswered   ReplyOutcome = iota + 1 // the first reply to its datagram, within the timeout
	ReplyLate                               // its datagram was already lost: the round trip stays lost
	ReplyDuplicated                         // another reply to a datagram already answered
	ReplyInvalid                            // not a reply to a datagram this session sent
)

// RoundTrip follows the replies to one session's datagrams, as a Tracker
// follows a stream: it does no I/O, takes the monotonic time in nanoseconds
// as an argument, returns what became of each reply and keeps the totals;
// it is not safe for concurrent use.
//
// A datagram is lost on the round trip when no reply arrives within the loss
// timeout of its sending (RFC 7680's waiting time, measured from the send
// time, which the sender knows). Each reply carries the receiver's count of
// distinct sequence numbers received so far. Decisions are made in sequence
// order; between two answered sequence numbers a < b, the count difference
// says how many of the lost ones in between reached the receiver (their
// replies were lost: downstream) and how many did not (upstream). The split
// of those after the last reply waits for the next reply, or for the
// goodbye's reply when the session ends. Each reply also carries how many
// replies the receiver had held back so far: of the gap's datagrams that
// reached it, that many were withheld rather than lost on the way back.
// Losses are counted once their gap is split, or, for a gap no reply
// closes, a loss timeout after its first loss, direction unknown.
//
// That split is exact only when the path to the receiver does not reorder
// across a loss. Replies that account for each leg (Report.Session set:
// protocol version 5) replace it: the receiver numbers its replies, and
// the reply numbers are followed by a Tracker, whose losses, with the same
// waiting time, are the downstream ones; the receiver's own count of the
// session's losses is the upstream one. Each leg is then counted by the
// rules a receiver counts a stream by, exactly, whatever either path
// reorders; the gaps still decide Lost and Withheld, and the legs never
// add up to more than Lost: what they report beyond it waits for Lost to
// grow.
type RoundTrip struct {
	// What a datagram and its reply read comes first, in two cache lines,
	// and the whole takes the 192-byte size class of Go's allocator, whose
	// objects start on a line (TestRoundTripLayout): with many targets,
	// each one's is cold by its next datagram.

	// unsplit: the counts replies carry are recorded but not trusted yet
	// (a STAMP reflector not known to be stateful): gaps are lost with
	// their direction unknown until Split is called.
	unsplit bool
	bye     bool // a reply to the goodbye came
	timeout int64
	slots   []slot // a power of two of them
	next    uint64 // the next sequence number to be sent
	oldest  uint64 // the oldest sequence number not yet decided
	legs    *legs  // from the first reply that accounts for each leg
	gap     uint64 // not answered since the last answered one, direction unknown
	counted uint64 // of gap, how many Lost holds already
	base    uint64 // the receiver's count at the last answered one (running maximum)
	wbase   uint64 // its withheld count there (running maximum)
	c       RoundTripCounts
	gapAt   int64  // monotonic ns when the gap's first datagram was due: its loss timeout ended
	byeN    uint64 // the count the goodbye's reply carried
	byeW    uint64 // and the withheld count
}

// legs follows what version-5 replies say of each leg.
type legs struct {
	session, prev uint64   // the receiver's id for the session, and the one before it restarted
	replies       *Tracker // the reply numbers
	lost          uint64   // the highest lost count a data reply carried
	received      uint64   // the highest received count any reply carried
	// expected is, once a goodbye's reply came, the sequence numbers the
	// receiver's stream covers up to the goodbye's: its received and lost
	// counts together. What it has not received of them is lost.
	expected  uint64
	byeNumber uint64 // how many data replies the goodbye's reply said were sent
	// earlierUp and earlierDown were counted under the receiver's earlier
	// ids for the session: it restarted, and its numbers started again.
	earlierUp, earlierDown uint64
}

// up and down are the losses the replies report on each leg so far.
func (l *legs) up() uint64 {
	lost := l.lost
	if l.expected > l.received {
		lost = max(lost, l.expected-l.received)
	}
	return l.earlierUp + lost
}

func (l *legs) down() uint64 { return l.earlierDown + l.replies.Counts().Lost }

// end settles the reply numbers of the receiver's current id: those
// numbered, up to what a goodbye's reply said, that did not come are lost.
func (l *legs) end() {
	if l.byeNumber > 0 && !l.replies.Started() {
		l.earlierDown += l.byeNumber // every reply numbered was lost
		l.byeNumber = 0
	}
	l.replies.Settle()
}

// NewRoundTrip sizes the window for rate datagrams per second over the
// loss timeout (ns), with room to spare. A RoundTrip allocates only for
// the first reply that accounts for each leg, and when the receiver
// restarts.
func NewRoundTrip(timeout int64, rate float64) *RoundTrip {
	need := uint64(rate*float64(timeout)/1e9) + 64
	size := min(uint64(1)<<bits.Len64(need), MaxRoundTripWindow)
	return &RoundTrip{timeout: timeout, slots: make([]slot, size)}
}

// Unsplit holds back the split by the replies' counts: the gaps decided
// from now on are lost with their direction unknown, while the counts are
// still kept, so that Split can start splitting at the next gap.
func (r *RoundTrip) Unsplit() { r.unsplit = true }

// Split splits the gaps decided from now on by the replies' counts.
func (r *RoundTrip) Split() { r.unsplit = false }

// Counts returns the totals so far.
func (r *RoundTrip) Counts() RoundTripCounts { return r.c }

// slot is seq's place in the window.
func (r *RoundTrip) slot(seq uint64) *slot { return &r.slots[seq&uint64(len(r.slots)-1)] }

// Reject counts a datagram on the sending socket that is no reply to this
// session: foreign, damaged or unauthenticated.
func (r *RoundTrip) Reject() { r.c.Invalid++ }

// Send registers seq, about to be written at now. Call it before the write,
// so that a reply can never beat it, and Unsend if the write fails.
func (r *RoundTrip) Send(seq uint64, now int64) {
	for seq-r.oldest >= uint64(len(r.slots)) && r.oldest < r.next {
		r.pass() // the window is full: decide the oldest now, as lost
		r.count()
	}
	*r.slot(seq) = slot{sent: now}
	r.next = seq + 1
}

// Next is the sequence number after the last one sent.
func (r *RoundTrip) Next() uint64 { return r.next }

// Unsend forgets seq: the kernel refused it, so it was never sent.
func (r *RoundTrip) Unsend(seq uint64) {
	if r.next == seq+1 {
		r.next = seq
	}
}

// UnknownCount is the count of a reply that carries none: the losses
// before it are counted with their direction unknown. A udpprobe reply
// counts its own datagram, so its count is never 0.
const UnknownCount = 0

// Reply takes a reply to seq, with what it reports, arriving at now.
func (r *RoundTrip) Reply(seq uint64, rep Report, now int64) ReplyResult {
	r.Expire(now)
	res := r.reply(seq, rep.Received, rep.Withheld, now)
	if res.Outcome == ReplyAnswered || res.Outcome == ReplyLate || res.Outcome == ReplyDuplicated {
		if l := r.leg(rep.Session); l != nil {
			l.replies.ObserveFrom(rep.Number, now, 0) // the receiver numbers from 0
			l.lost = max(l.lost, rep.Lost)
			l.received = max(l.received, rep.Received)
		}
	}
	r.grant()
	return res
}

// leg returns the legs to take a report of the receiver's id for the
// session into, or nil: a reply without legs, or one from before the
// receiver restarted.
func (r *RoundTrip) leg(session uint64) *legs {
	if session == 0 {
		return nil
	}
	l := r.legs
	switch {
	case l == nil:
		l = &legs{session: session}
		r.legs = l
	case session == l.session:
		return l
	case session == l.prev:
		return nil // a straggler from before the restart
	default: // the receiver restarted: what it said before is final
		l.end()
		*l = legs{session: session, prev: l.session, earlierUp: l.up(), earlierDown: l.down()}
	}
	l.replies = New(Options{Timeout: r.timeout, Window: uint64(len(r.slots))})
	return l
}

// grant moves what the legs report into Upstream and Downstream, as far
// as Lost allows.
func (r *RoundTrip) grant() {
	room := r.c.Lost - r.c.Upstream - r.c.Downstream
	if r.legs == nil || room == 0 {
		return // nothing to move: the legs' memory stays untouched
	}
	if up := r.legs.up(); up > r.c.Upstream {
		n := min(up-r.c.Upstream, room)
		r.c.Upstream += n
		room -= n
	}
	if down := r.legs.down(); down > r.c.Downstream {
		r.c.Downstream += min(down-r.c.Downstream, room)
	}
}

func (r *RoundTrip) reply(seq, count, withheld uint64, now int64) ReplyResult {
	switch {
	case seq >= r.next:
		r.c.Invalid++ // never sent
		return ReplyResult{Outcome: ReplyInvalid}
	case r.next-seq > uint64(len(r.slots)):
		r.c.Late++ // decided long ago
		return ReplyResult{Outcome: ReplyLate}
	}
	s := r.slot(seq)
	switch {
	case seq >= r.oldest && s.state == slotPending:
		s.state, s.count, s.withheld = slotAnswered, count, withheld
		r.c.Answered++
		return ReplyResult{Outcome: ReplyAnswered, RTT: now - s.sent}
	case s.state == slotLost:
		s.state = slotLate
		r.c.Late++
		return ReplyResult{Outcome: ReplyLate}
	}
	r.c.Duplicated++
	return ReplyResult{Outcome: ReplyDuplicated}
}

// Goodbye takes a reply to the goodbye, arriving at now: the receiver's
// final counts.
func (r *RoundTrip) Goodbye(rep Report, now int64) {
	r.Expire(now)
	r.bye = true
	r.byeN = max(r.byeN, rep.Received)
	r.byeW = max(r.byeW, rep.Withheld)
	if l := r.leg(rep.Session); l != nil {
		// A datagram that reached the receiver after the goodbye (it was
		// overtaken) raises the received count of the replies after it,
		// and is not lost.
		l.received = max(l.received, rep.Received)
		l.expected = max(l.expected, rep.Received+rep.Lost)
		l.byeNumber = max(l.byeNumber, rep.Number)
		if rep.Number > 0 {
			l.replies.Goodbye(rep.Number-1, now)
		}
	}
	r.grant()
}

// Expire decides, in sequence order, what the time now allows.
func (r *RoundTrip) Expire(now int64) {
	for r.oldest < r.next {
		s := r.slot(r.oldest)
		if s.state == slotPending && now-s.sent < r.timeout {
			break
		}
		r.pass()
	}
	if r.gap > r.counted && now-r.gapAt >= r.timeout && !r.bye {
		// No reply closed the gap in a loss timeout: a dead path. (The
		// goodbye's reply, once in, splits the tail when it settles.)
		r.count()
	}
	if r.legs != nil {
		r.legs.replies.Expire(now)
	}
	r.grant()
}

// pass decides the oldest sequence number: answered, or else one more of
// the gap.
func (r *RoundTrip) pass() {
	s := r.slot(r.oldest)
	r.oldest++
	if s.state != slotAnswered {
		s.state = slotLost
		if r.gap == 0 {
			r.gapAt = s.sent + r.timeout
		}
		r.gap++
		return
	}
	if s.count == UnknownCount {
		// A reply that says nothing of the receiver's count (a stateless
		// STAMP reflector's): the gap before it is lost, direction unknown.
		r.count()
		r.gap, r.counted = 0, 0
		return
	}
	if r.base > s.count+uint64(len(r.slots)) {
		r.base, r.wbase = 0, 0 // the count went far back: the receiver started counting again
	}
	var got, withheld uint64 // of the gap, how many the receiver counted, and held back
	if s.count > r.base {
		got = min(s.count-r.base-1, r.gap)
	}
	if s.withheld > r.wbase {
		withheld = min(s.withheld-r.wbase, got)
	}
	switch {
	case r.unsplit:
		r.count()
		r.gap, r.counted = 0, 0
	case r.legs != nil:
		r.lose(withheld) // the legs say the direction
	default:
		r.split(got, withheld)
	}
	r.base = max(r.base, s.count)
	r.wbase = max(r.wbase, s.withheld)
}

// count counts the gap's losses Lost does not hold yet, their direction
// unknown.
func (r *RoundTrip) count() {
	r.c.Lost += r.gap - r.counted
	r.counted = r.gap
}

// lose counts the gap lost but for withheld of it, the replies the
// receiver held back, with no direction (the legs give it), and returns
// how many it counted withheld: what Lost already holds of the gap stays
// lost.
func (r *RoundTrip) lose(withheld uint64) uint64 {
	lost := r.gap - withheld
	if r.counted > lost {
		withheld -= r.counted - lost
		lost = r.counted
	}
	r.c.Lost += lost - r.counted
	r.c.Withheld += withheld
	r.gap, r.counted = 0, 0
	return withheld
}

// split attributes the gap: got of it reached the receiver, which held
// back the replies of withheld of those. What Lost already holds of the
// gap stays lost: a withheld reply counted lost before the news came is
// counted downstream.
func (r *RoundTrip) split(got, withheld uint64) {
	gap := r.gap
	withheld = r.lose(withheld)
	r.c.Downstream += got - withheld
	r.c.Upstream += gap - got
}

// Settled reports whether every datagram sent is decided and the goodbye
// was answered: nothing more can arrive that changes the counts.
func (r *RoundTrip) Settled() bool { return r.oldest == r.next && r.bye }

// Settle ends the session: whatever is still pending is lost, and the tail
// is split by the goodbye's count if its reply came.
func (r *RoundTrip) Settle() {
	for r.oldest < r.next {
		r.pass()
	}
	if r.legs != nil {
		r.legs.end()
	}
	if !r.bye || r.unsplit {
		r.count()
		r.grant()
		return
	}
	var got, withheld uint64
	if r.byeN > r.base {
		got = min(r.byeN-r.base, r.gap)
	}
	if r.byeW > r.wbase {
		withheld = min(r.byeW-r.wbase, got)
	}
	if r.legs != nil {
		r.lose(withheld)
		r.grant()
		return
	}
	r.split(got, withheld)
}
