// Package tracker classifies the sequence numbers of one stream (one sender
// session) as they arrive: received, duplicated, reordered, late, and, once
// their waiting time has passed, lost, with lost packets grouped into loss
// periods. It does no I/O, takes the time as an argument and allocates only
// when a stream first needs more room for pending gaps, so it can be
// table-tested with crafted sequences. docs/metrics.md states the rules in
// prose with the RFC each one follows; the comments here name the rule.
//
// A Tracker is not safe for concurrent use.
package tracker

// Defaults for Options.
const (
	DefaultWindow     = 1 << 16
	DefaultResyncJump = 1 << 31
	// MaxPendingGaps bounds the memory a stream can hold for gaps awaiting
	// their deadline; past it the oldest gap is settled early.
	MaxPendingGaps = 4096
	// NReordering is the n of the n-reordering a tracker follows (RFC 4737
	// section 5): a Result's N is exact up to it and means "N or more" at
	// it. Three is where TCP's fast retransmit begins.
	NReordering = 3
)

// Options configure a Tracker.
type Options struct {
	// Timeout is the waiting time in nanoseconds (RFC 7680 Tmax): a missing
	// sequence number is declared lost this long after the first datagram with
	// a higher sequence number arrived.
	Timeout int64
	// Window is how many sequence numbers below the highest one the tracker
	// remembers; a power of two, at least 64. Older missing numbers are
	// declared lost before their timeout, and datagrams older than the window
	// count as late. Zero means DefaultWindow.
	Window uint64
	// ResyncJump bounds a plausible jump, in sequence numbers: a datagram
	// more than that ahead of the highest number, or more than that behind
	// it (and older than the window), is not placed (Stray) unless the next
	// datagram follows it, which resynchronises the stream there (RFC 3550
	// appendix A.1). Zero means DefaultResyncJump.
	ResyncJump uint64
	// Sink receives losses and loss periods as they are settled. May be nil.
	Sink Sink
}

// Sink is told about losses when they are settled, which happens after the
// datagram that revealed them, in Observe, Expire or Settle.
type Sink interface {
	// Lost reports n sequence numbers declared lost.
	Lost(n uint64)
	// Gap reports a loss period (RFC 3357): a maximal run of consecutive lost
	// sequence numbers, reported once the run has ended, with its span:
	// the send clock (see ObserveSent) of the first datagram after it less
	// that of the last one before it, or -1 where either is not known (a
	// run before the stream's first datagram, or after its last).
	Gap(length uint64, span int64)
	// Unavailable reports one more unavailable second (see Counts).
	Unavailable()
}

// Outcome is what became of one datagram.
type Outcome uint8

// Outcomes. Received and Reordered are first copies and count as received.
const (
	Received   Outcome = iota + 1 // first copy, not reordered
	Reordered                     // first copy, after a higher sequence number, within its waiting time
	Duplicated                    // another copy of a sequence number already seen
	Late                          // arrived after it was declared lost, or too old to place
	Stray                         // an implausible jump, not (yet) followed by the next number: not placed
)

// Result is returned by Observe.
type Result struct {
	Outcome Outcome
	// Extent is the RFC 4737 reordering extent of a Reordered datagram: how
	// many first copies arrived between the earliest-arriving datagram with a
	// higher sequence number and this one, counting that datagram.
	Extent uint64
	// N is the n-reordering of a Reordered datagram (RFC 4737 section 5):
	// how many of the first copies that arrived just before it, in a row,
	// have higher sequence numbers; at most NReordering, which means that
	// many or more.
	N uint8
	// Resync is set when this datagram confirmed an implausible jump (it
	// followed a Stray one), so the stream was settled and restarted at its
	// sequence number.
	Resync bool
	// Revealed is how many sequence numbers this datagram, the new highest,
	// found missing just below it: the gap that opened right before it.
	Revealed uint64
}

// Counts are the cumulative totals of a Tracker.
type Counts struct {
	Received, Lost, Duplicated, Reordered, Late, Stray, Gaps, Resyncs uint64
	// Expected is how many sequence numbers the stream covers: the sum, over
	// segments between resyncs, of highest − lowest + 1 (the announced last
	// sequence number counts as the highest after a goodbye).
	Expected uint64
	// Unavailable counts the seconds of the send clock in which more than
	// half the numbers sent were lost (ITU-T Y.1563's severely errored
	// second), each decided once every number sent in it is settled. A
	// lost number's send time is interpolated between the datagrams
	// around it; numbers before the stream's first datagram or after its
	// last (a goodbye's) are in no second.
	Unavailable uint64
}

// Pending is how many covered sequence numbers are neither received nor lost
// yet. A settled stream has none: Received + Lost == Expected.
func (c Counts) Pending() uint64 { return c.Expected - c.Received - c.Lost }

type gap struct {
	start, end uint64 // missing candidates [start, end); end was received
	deadline   int64
	arrival    uint64 // arrival position of the datagram that revealed the gap
	// The send clocks of start-1, the highest number before the gap was
	// revealed (or the last one settled, if later), and of end, which
	// revealed it: the gap's numbers were sent between the two.
	before, after int64
}

// Tracker follows one stream. The zero value is not usable; call New.
//
// The fields a datagram in order reads come first, together: with many
// streams each one's memory is cold by its next datagram, and every
// cache line it spans costs a miss (docs/performance.md).
type Tracker struct {
	started bool
	// Datagrams with sequence numbers below the first one, arriving within the
	// first datagram's waiting time, extend the segment downwards: [low, first)
	// is then settled on its own at firstArrival + timeout.
	preOpen bool
	// A goodbye announces the last sequence number: missing numbers up to it
	// are settled at closeAt.
	closing    bool
	head       uint64 // highest sequence number seen + 1
	tail       uint64 // [first, tail) is settled
	resyncJump uint64
	// bits are the received flags, a ring over [head-window, head): its
	// length is the window's (window, mask).
	bits      []uint64
	gaps      gapQueue
	headAt    int64  // arrival of the datagram that set head
	headClock int64  // its send clock (noClock: not known)
	lossRun   uint64 // lost numbers ending at tail-1 whose run is still open
	arrivals  uint64 // first copies received in this segment: RFC 4737 positions
	// recent are the sequence numbers of the segment's latest first copies,
	// the latest first, for n-reordering: the first min(arrivals,
	// NReordering) are set.
	recent   [NReordering]uint64
	received uint64 // Counts' Received, apart from the others, which a datagram in order does not change
	clocks   clocks // the send clocks of settled numbers, for time
	counts   Counts // but Received

	timeout         int64
	sink            Sink
	low             uint64 // lowest sequence number of the segment
	first           uint64 // sequence number of the segment's first datagram
	firstArrival    int64
	earlierExpected uint64 // Expected of earlier segments
	// probation is the number that would confirm the latest implausible
	// jump (a datagram with it resynchronises the stream); 0 if none.
	probation uint64
	last      uint64 // the goodbye's
	closeAt   int64
}

// New returns a Tracker for one stream.
func New(o Options) *Tracker {
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.Window < 64 || o.Window&(o.Window-1) != 0 {
		panic("tracker: window must be a power of two of at least 64")
	}
	if o.ResyncJump == 0 {
		o.ResyncJump = DefaultResyncJump
	}
	return &Tracker{
		timeout:    o.Timeout,
		resyncJump: o.ResyncJump,
		sink:       o.Sink,
		bits:       make([]uint64, o.Window/64),
	}
}

// window is how many sequence numbers below the highest the tracker
// places, and mask their place in the ring.
func (t *Tracker) window() uint64 { return uint64(len(t.bits)) * 64 }
func (t *Tracker) mask() uint64   { return t.window() - 1 }

// Counts returns the totals so far.
func (t *Tracker) Counts() Counts {
	c := t.counts
	c.Received = t.received
	c.Expected = t.earlierExpected
	if t.started {
		c.Expected += t.head - t.low
		if t.closing && t.last >= t.head {
			c.Expected += t.last + 1 - t.head
		}
	}
	return c
}

// Observe classifies a datagram with sequence number seq that arrived at now
// (nanoseconds on a monotonic clock), timing loss periods and seconds by
// arrival. Sequence numbers are at most 2^63−1.
func (t *Tracker) Observe(seq uint64, now int64) Result { return t.ObserveSent(seq, now, now) }

// ObserveSent is Observe for a datagram its sender sent at sent
// (nanoseconds on the sender's monotonic clock): loss periods and
// unavailable seconds are timed by when their datagrams were sent.
func (t *Tracker) ObserveSent(seq uint64, now, sent int64) Result {
	t.Expire(now)
	if !t.started {
		t.start(seq, now, sent)
		return t.receive(seq, Received, 0)
	}
	switch {
	case seq >= t.head:
		if !t.plausible(seq-t.head, now) {
			return t.jump(seq, now, sent)
		}
		revealed := t.advance(seq, now, sent)
		r := t.receive(seq, Received, 0)
		r.Revealed = revealed
		return r
	case seq < t.floor():
		if t.head-1-seq > t.resyncJump { // more than that below the highest
			return t.jump(seq, now, sent)
		}
		return t.late() // older than the window: cannot be placed
	case seq < t.low:
		if now >= t.firstArrival+t.timeout {
			return t.late() // would have been lost had we known the stream began earlier
		}
		t.extend(seq)
		return t.receive(seq, Reordered, t.arrivals)
	case t.has(seq):
		t.counts.Duplicated++
		return Result{Outcome: Duplicated}
	}
	t.set(seq)
	switch {
	case seq >= t.tail:
		return t.receive(seq, Reordered, t.arrivals-t.gaps.revealedAt(seq))
	case seq < t.first && t.preOpen:
		return t.receive(seq, Reordered, t.arrivals) // revealed by the segment's first datagram
	}
	return t.late()
}

// minJump is the jump ahead always plausible: below it, a forged number
// costs at most that many losses; above it, the stream's own rate decides.
const minJump = 1024

// plausible reports whether the sender can have sent jump numbers past
// the highest by now: at most a resync jump, and, once the stream's rate
// is known, at most twice what it sends at that rate over the silence
// since the highest number arrived and a waiting time more (RFC 3550 A.1's
// MAX_DROPOUT, scaled to the stream). A jump beyond it is held as a stray
// until the next number confirms it.
func (t *Tracker) plausible(jump uint64, now int64) bool {
	if jump >= t.resyncJump {
		return false
	}
	if jump < minJump {
		return true // not far
	}
	span, elapsed := t.head-1-t.first, t.headAt-t.firstArrival
	if span < 16 || elapsed <= 0 {
		return true // the rate is not known yet
	}
	return float64(jump) <= 2*float64(span)*float64(now-t.headAt+t.timeout)/float64(elapsed)
}

// jump takes a datagram an implausible distance from the stream, ahead or
// behind. Like RTP (RFC 3550 appendix A.1) it believes the jump only when
// the next number follows: one such datagram is a stray and changes nothing
// else, so a single forged or corrupted number cannot derail the stream;
// its successor settles the stream and restarts it at the new number.
func (t *Tracker) jump(seq uint64, now, sent int64) Result {
	if t.probation == 0 || seq != t.probation {
		t.probation = seq + 1
		t.counts.Stray++
		return Result{Outcome: Stray}
	}
	t.Settle()
	t.earlierExpected = t.Counts().Expected
	t.counts.Resyncs++
	t.start(seq, now, sent)
	r := t.receive(seq, Received, 0)
	r.Resync = true
	return r
}

func (t *Tracker) receive(seq uint64, o Outcome, extent uint64) Result {
	r := Result{Outcome: o, Extent: extent}
	known := min(t.arrivals, NReordering)
	if o == Reordered {
		t.counts.Reordered++
		for r.N < uint8(known) && t.recent[r.N] > seq {
			r.N++
		}
	}
	copy(t.recent[1:], t.recent[:NReordering-1])
	t.recent[0] = seq
	t.arrivals++
	t.received++
	return r
}

func (t *Tracker) late() Result {
	t.counts.Late++
	return Result{Outcome: Late}
}

func (t *Tracker) start(seq uint64, now, sent int64) {
	t.started = true
	t.low, t.first, t.tail, t.head = seq, seq, seq+1, seq+1
	t.firstArrival = now
	t.headAt, t.headClock = now, sent
	t.clocks = clocks{last: point{seq, sent}}
	t.account(point{seq, sent}, 1, false)
	t.arrivals = 0
	t.lossRun = 0
	t.preOpen = false
	t.closing = false
	t.probation = 0
	t.gaps.reset()
	clear(t.bits)
	t.set(seq)
}

// floor is the lowest sequence number the window still remembers.
func (t *Tracker) floor() uint64 {
	if t.head < t.window() {
		return 0
	}
	return t.head - t.window()
}

// advance takes a new highest sequence number, sent at sent; [head, seq)
// become missing candidates with one deadline (RFC 7680, waiting time from
// the reveal). It returns how many there are.
func (t *Tracker) advance(seq uint64, now, sent int64) (revealed uint64) {
	newHead := seq + 1
	if newHead > t.window() {
		floor := newHead - t.window()
		if t.preOpen && floor > t.low {
			t.settlePre()
		}
		if floor > t.tail {
			t.settleBelow(floor, point{seq, sent})
		}
	}
	start := max(t.head, t.tail)
	if start < seq {
		t.clearRange(start, seq)
		if t.gaps.len() == MaxPendingGaps {
			t.expireFront()
		}
		before := t.headClock // of head-1
		if start > t.head {
			before = t.clocks.last.c // of tail-1: settleBelow settled what lay between
		}
		t.gaps.push(gap{start: start, end: seq, deadline: now + t.timeout, arrival: t.arrivals, before: before, after: sent})
		revealed = seq - start
	}
	t.set(seq)
	t.head = newHead
	t.headAt, t.headClock = now, sent
	if t.gaps.len() == 0 {
		t.settleTo(t.head, point{seq, sent})
	}
	return revealed
}

// extend lowers the segment's start to seq, below the first datagram,
// which arrived.
func (t *Tracker) extend(seq uint64) {
	t.lower(seq)
	t.set(seq)
}

// lower lowers the segment's start to seq, below the first datagram: the
// numbers from seq up are pending, settled on their own (settlePre).
func (t *Tracker) lower(seq uint64) {
	if t.preOpen {
		t.clearRange(seq, t.low)
	} else {
		t.clearRange(seq, t.first)
		t.preOpen = true
	}
	t.low = seq
}

func (t *Tracker) has(seq uint64) bool {
	idx := seq & t.mask()
	return t.bits[idx>>6]&(1<<(idx&63)) != 0
}

func (t *Tracker) set(seq uint64) {
	idx := seq & t.mask()
	t.bits[idx>>6] |= 1 << (idx & 63)
}

// clearRange clears the flags of [lo, hi).
func (t *Tracker) clearRange(lo, hi uint64) {
	if hi-lo >= t.window() {
		clear(t.bits)
		return
	}
	for lo < hi {
		idx := lo & t.mask()
		off := idx & 63
		n := min(64-off, hi-lo)
		m := ^uint64(0)
		if n < 64 {
			m = (1<<n - 1) << off
		}
		t.bits[idx>>6] &^= m
		lo += n
	}
}

func (o Outcome) String() string {
	switch o {
	case Received:
		return "received"
	case Reordered:
		return "reordered"
	case Duplicated:
		return "duplicated"
	case Late:
		return "late"
	case Stray:
		return "stray"
	}
	return "unknown"
}

// Reset returns the tracker to its state after New, keeping its buffers, so a
// stream's memory can serve the next one.
func (t *Tracker) Reset() {
	*t = Tracker{
		timeout: t.timeout, resyncJump: t.resyncJump, sink: t.sink,
		bits: t.bits, gaps: gapQueue{buf: t.gaps.buf},
	}
	clear(t.bits)
}

// Started reports whether the tracker has seen a datagram since New or Reset.
func (t *Tracker) Started() bool { return t.started }
