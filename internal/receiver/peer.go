package receiver

import (
	"math/rand/v2"
	"time"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// stream is one session of a sender.
type stream struct {
	session uint64
	// tr's Received, the distinct sequence numbers received in time, is the
	// count a reply carries: late arrivals stay lost there as in the loss
	// counter, so the sender's split agrees with this receiver.
	tr     *tracker.Tracker
	timing timing
	// withheld is how many replies to the session's probes the reply
	// limiter held back; each reply tells the sender, so that it can count
	// them apart from loss.
	withheld uint64
	// goodbyeReplies is how many goodbyes the limiter let pass unmetered.
	goodbyeReplies int
	// replied is how many data replies the session has been sent: the
	// next one's number (wire.Legs.Number; a STAMP reply's sequence number,
	// RFC 8762 section 4.3.1, stateful mode).
	replied uint64
	// id is this receiver's own id for the session (wire.Legs.Session):
	// a sender that sees it change knows the numbers started again.
	id uint64
	// sentUpTo is the latest send time (the sender's wall clock, ns) of
	// the session's first copies.
	sentUpTo int64
	// The stream's first datagram: its sequence number and send clock.
	firstSeq, firstSent int64
}

// tooOld reports whether h, below the stream's first datagram, was sent
// more than the waiting time (ns) before it. Then it arrived later than
// the waiting time after it was sent, whatever the path's delay, since the
// first arrived after it was sent: it is late, not a reason to extend the
// stream downwards (a replayed datagram after a receiver restart would
// otherwise declare everything between it and the first lost).
func (s *stream) tooOld(h *wire.Header, timeout int64) bool {
	return int64(h.Seq) < s.firstSeq && s.firstSent-h.SendClock > timeout
}

// newStream is a stream of session whose first datagram h is.
func newStream(h *wire.Header, tr *tracker.Tracker) stream {
	return stream{session: h.Session, tr: tr, firstSeq: int64(h.Seq), firstSent: h.SendClock, id: max(rand.Uint64(), 1)}
}

// counts are what a reply to the stream's datagram carries: the distinct
// numbers received in time (for a session on probation, its one
// datagram, as the session will count it once confirmed), the replies
// withheld, and the legs: the reply's number and the numbers lost, which
// for a goodbye's reply include those still pending up to its number.
func (s *stream) counts(goodbye bool) wire.Counts {
	c := wire.Counts{Received: 1, Withheld: s.withheld, Legs: wire.Legs{Session: s.id, Number: s.replied}}
	if s.tr != nil {
		tc := s.tr.Counts()
		c.Received, c.Legs.Lost = tc.Received, tc.Lost
		if goodbye {
			c.Legs.Lost = tc.Expected - tc.Received
		}
	}
	return c
}

// ecnCE is the ECN codepoint Congestion Experienced (RFC 3168).
const ecnCE = 3

// mark counts what the path did to the traffic class sent (DSCP in the
// high six bits, ECN in the low two) of one of the peer's datagrams, as
// tr says it arrived. A datagram whose sender set none (0), or whose
// arrival the socket did not read, counts nothing.
func (p *peer) mark(sent uint8, tr Traffic) {
	if sent == 0 || !tr.HasTOS {
		return
	}
	p.m.Mark()
	got := tr.TOS
	if got>>2 != sent>>2 {
		p.m.Remarked.Inc()
	}
	switch {
	case got&3 == ecnCE:
		p.m.CEMarked.Inc()
	case sent&3 != 0 && got&3 == 0:
		p.m.ECNBleached.Inc()
	}
}

// maxGoodbyeReplies bounds the goodbye replies a session gets past the
// reply limiter: a sender sends three.
const maxGoodbyeReplies = 3

// peer is one sender as it reaches this receiver: its name and the target
// it sent to (see peerKey). It keeps at most two streams: the
// current session and the previous one, which goes on draining (its pending
// gaps reach their deadlines, its stragglers count as late or duplicated
// rather than as yet another restart) until a third session displaces it or
// the peer expires.
type peer struct {
	name   string // the sender's
	target string // how the sender names this receiver; "" from version 1
	// flow is the sender's flow this peer is (wire.Header.Flow): each of a
	// sender's flows to a target is a peer of its own, with its streams,
	// and all share the series m, counted together; fm are its own.
	flow     uint16
	fm       *metrics.FlowCounts
	m        *metrics.ReceiverPeer
	cur      *stream
	prev     *stream
	lastSeen int64  // monotonic ns
	began    int64  // monotonic ns of the first datagram of the current session, if it followed another
	reported totals // the totals at the last summary
	limit    limiter
	// credit is how many of the numbers this peer's streams will yet declare
	// lost were dropped by this host's socket instead (see ledger.attribute),
	// until creditUntil (monotonic ns), when the gaps it was given for have
	// all been settled.
	credit      uint64
	creditUntil int64
	// cand is a session on probation, if its copies are not 0.
	cand candidate
	hops hops
	// deep: the peer's depth metrics are counted (Options.DepthMetrics);
	// pdv is its current PDV interval.
	deep bool
	pdv  pdv
	// delays is the table's: whose one-way delays it records.
	delays *delayGate
}

// delayGate records a one-way delay only where it means something: both
// clocks say they are synchronised, and their maximum errors add up to at
// most bound (RFC 7679 section 3.7 asks for the clocks' errors with every
// delay); a bound of 0 records every delay. A negative delay is never
// recorded: the clocks disagree, whatever they say.
type delayGate struct {
	bound        time.Duration
	synchronised bool          // this host's clock
	maxError     time.Duration // this host's clock
}

// trusts reports whether a delay of a datagram whose sender's clock had
// the error estimate e (stamp.ErrorEstimate) is recorded.
func (g *delayGate) trusts(e uint16) bool {
	if g.bound == 0 {
		return true
	}
	est := stamp.ErrorEstimate(e)
	return est.Synchronised() && g.synchronised && est.Error() <= g.bound-g.maxError
}

// pathChangeRun is how many datagrams in a row must cross another number
// of hops than the current one for it to count as a path change: one
// stray datagram of a path being left is not one.
const pathChangeRun = 3

// hops follows a peer's hop count: the current one (known once a datagram
// said its hop limit), and another one the latest datagrams in a row
// crossed, and how many.
type hops struct {
	known          bool
	current, other uint8
	run            int
}

// hop takes the hop limit one of the peer's datagrams says it was sent
// with (0: not said) and tr, what it arrived with: the routers it crossed
// are the difference. A datagram that arrived with more than it was sent
// with (a router that raised it) counts nothing.
func (p *peer) hop(sent uint8, tr Traffic) {
	if sent == 0 || !tr.HasTTL || tr.TTL > sent {
		return
	}
	n, h := sent-tr.TTL, &p.hops
	switch {
	case !h.known:
		h.known, h.current = true, n
		p.m.HopCount.Set(float64(n))
		p.m.KnowHops()
	case n == h.current:
		h.run = 0
	case n == h.other && h.run > 0:
		h.run++
	default:
		h.other, h.run = n, 1
	}
	if h.run >= pathChangeRun {
		h.current, h.run = n, 0
		p.m.HopCount.Set(float64(n))
		p.m.PathChanges.Inc()
	}
}

// candidate is the first datagram of a session the peer does not know, on
// probation (RFC 3550 A.1 with MIN_SEQUENTIAL 2): the session starts, with
// this datagram as its first, only when another datagram of it arrives a
// plausible distance away (probationSpan). A lone datagram of an unknown
// session, a replay or a forgery, so never restarts the peer, and never
// takes the current session's jitter and IPDV away. The stream it would
// start has no tracker yet; a reply to it carries what the session would
// count once confirmed.
type candidate struct {
	stream
	sendTime int64   // by the sender's wall clock
	clock    uint16  // the sender's clock's error estimate
	at       Instant // when it first arrived
	copies   uint64  // how many times it arrived; 0: no candidate
}

// probationSpan is how far from a session's first datagram the next one
// may be and still confirm it: it allows for loss and reordering between
// the two, as a tracker's smallest plausible jump does.
const probationSpan = 1024

// hold puts h, of a session p does not know, on probation, in place of the
// candidate p held, which is counted a stray.
func (p *peer) hold(h *wire.Header, at Instant) {
	p.m.Stray.Add(p.cand.copies)
	p.cand = candidate{
		stream:   newStream(h, nil),
		sendTime: h.SendTime, clock: h.Clock, at: at, copies: 1,
	}
}

// confirms reports whether h, a datagram of the candidate's session, is
// its second in sequence: any other number within probationSpan of the
// first, or a goodbye announcing one at or past it.
func (c *candidate) confirms(h *wire.Header) bool {
	d := int64(h.Seq) - c.firstSeq
	if h.Goodbye() {
		return d >= 0 && d < probationSpan
	}
	return d != 0 && d > -probationSpan && d < probationSpan
}

// confirm starts the candidate's session as the current one, counting its
// first datagram, as it arrived, and its copies. It reports whether a
// session was current before: then the sender restarted.
func (p *peer) confirm(opts tracker.Options) (s *stream, restarted bool) {
	c := &p.cand
	first := wire.Header{Session: c.session, Seq: uint64(c.firstSeq), SendTime: c.sendTime, SendClock: c.firstSent, Clock: c.clock}
	s, restarted = p.start(&first, opts)
	s.withheld, s.goodbyeReplies, s.replied, s.id = c.withheld, c.goodbyeReplies, c.replied, c.id
	for range c.copies {
		p.observe(s, &first, c.at)
	}
	if c.firstSeq > 0 && c.firstSent >= 0 && c.firstSent < opts.Timeout {
		// The sender sent its first number, 0, at its send clock's origin
		// or later, so less than a waiting time before this one: the
		// numbers below it are of this stream, lost unless they come.
		s.tr.Origin(0)
	}
	c.copies = 0
	return s, restarted
}

// bucket is the shape of a token bucket: it refills at rate tokens a
// second up to depth, a tenth of a second's worth.
type bucket struct{ rate, depth float64 }

// newBucket shapes a bucket for rate, at least least deep.
func newBucket(rate, least float64) bucket { return bucket{rate: rate, depth: max(least, rate/10)} }

// full is a limiter of the bucket's shape with every token in it.
func (b bucket) full() limiter { return limiter{tokens: b.depth} }

// limiter is a token bucket's tokens: a peer's replies, or all of them.
type limiter struct {
	tokens float64
	last   int64 // monotonic ns of the last refill
}

// take takes n tokens, if there are as many after refilling at b's shape.
func (l *limiter) take(now int64, n float64, b bucket) bool {
	l.tokens = min(b.depth, l.tokens+float64(now-l.last)*b.rate/1e9)
	l.last = now
	if l.tokens < n {
		return false
	}
	l.tokens -= n
	return true
}

// Lost and Gap make a peer the sink of its streams' trackers. Lost numbers
// are the socket's as far as the peer has credit, the network's beyond.
func (p *peer) Lost(n uint64) {
	local := min(n, p.credit)
	p.credit -= local
	p.m.DroppedLocally.Add(local)
	p.m.Lost.Add(n - local)
	p.fm.Lost.Add(n - local)
}

func (p *peer) Gap(length uint64, span int64) {
	p.m.GapLength.Observe(float64(length))
	if p.deep && span >= 0 {
		p.m.LossPeriod.Observe(float64(span) / 1e9)
	}
}

func (p *peer) Unavailable() { p.m.Unavailable.Inc() }

// totals are the counts a summary reports.
type totals struct {
	received, lost, local, duplicated, reordered, late, heldBack uint64
}

// totals reads the peer's counts.
func (p *peer) totals() totals {
	m := p.m
	return totals{received: m.Received.Load(), lost: m.Lost.Load(), local: m.DroppedLocally.Load(),
		duplicated: m.Duplicated.Load(), reordered: m.Reordered.Load(), late: m.Late.Load(), heldBack: m.RepliesLimited.Load()}
}

// since is what t counted after earlier.
func (t totals) since(earlier totals) totals {
	return totals{received: t.received - earlier.received, lost: t.lost - earlier.lost, local: t.local - earlier.local,
		duplicated: t.duplicated - earlier.duplicated, reordered: t.reordered - earlier.reordered, late: t.late - earlier.late,
		heldBack: t.heldBack - earlier.heldBack}
}

// heard notes a first copy from the peer, arriving at the given instant.
func (p *peer) heard(at Instant) {
	p.lastSeen = at.Mono
	p.m.LastPacket.Set(float64(at.Wall) / 1e9)
}

// start makes a new session, whose first datagram is h, the current one
// (a restart, when the peer already had one).
func (p *peer) start(h *wire.Header, opts tracker.Options) (s *stream, restarted bool) {
	var tr *tracker.Tracker
	if p.prev != nil {
		p.prev.tr.Settle()
		tr = p.prev.tr
		tr.Reset()
	} else {
		opts.Sink = p
		tr = tracker.New(opts)
	}
	restarted = p.cur != nil
	p.pdv.end(p.m.PDV) // the new session's send clock has another origin
	st := newStream(h, tr)
	p.prev, p.cur = p.cur, &st
	if p.flow == 0 { // the gauges are flow 0's
		p.m.Jitter.Set(0)
		p.m.SessionEnded.Set(0)
	}
	return p.cur, restarted
}

// sendRate is the rate the sender sends the stream at, datagrams per
// second, by its own clock from the stream's first datagram to h, a data
// datagram; 0 until it can tell, and for a goodbye.
func (s *stream) sendRate(h *wire.Header) float64 {
	if h.Goodbye() || h.SendClock <= s.firstSent || int64(h.Seq) <= s.firstSeq {
		return 0
	}
	return float64(int64(h.Seq)-s.firstSeq) * 1e9 / float64(h.SendClock-s.firstSent)
}

// stale reports whether a datagram of a session the peer does not know was
// sent before the current session's latest: a replay of a session gone by,
// which must never displace the live one.
func (p *peer) stale(h *wire.Header) bool {
	return p.cur != nil && p.known(h.Session) == nil && h.SendTime < p.cur.sentUpTo
}

// known returns the stream of session, if the peer has one (a session
// on probation has none yet).
func (p *peer) known(session uint64) *stream {
	for _, s := range []*stream{p.cur, p.prev} {
		if s != nil && s.session == session {
			return s
		}
	}
	return nil
}

// observe counts one data datagram that arrived at the given instant.
// One-way delay is recorded for first copies in time, delay variation only
// for those in order; duplicated and late datagrams feed neither (RFC 7679
// leaves the delay of a lost packet undefined).
func (p *peer) observe(s *stream, h *wire.Header, at Instant) tracker.Result {
	r := s.tr.ObserveSent(h.Seq, at.Mono, h.SendClock)
	switch r.Outcome {
	case tracker.Received, tracker.Reordered:
		p.m.Received.Inc()
		p.fm.Received.Inc()
		s.sentUpTo = max(s.sentUpTo, h.SendTime)
		if d := at.Wall - h.SendTime; d >= 0 && p.delays.trusts(h.Clock) {
			p.m.OneWayDelay.Observe(float64(d) / 1e9)
		} else {
			p.m.DelayUnsynchronised.Inc()
		}
		if p.deep && s == p.cur {
			p.pdv.add(at.Mono-h.SendClock, at.Mono, p.m.PDV)
		}
		if r.Outcome == tracker.Received && s == p.cur {
			if v := s.timing.inOrder(h.Seq, h.SendClock, at.Mono); v.ok {
				if p.flow == 0 {
					p.m.Jitter.Set(v.jitter / 1e9)
				}
				if v.consec {
					p.m.IPDV.Observe(float64(v.ipdv) / 1e9)
				}
			}
		}
		if r.Outcome == tracker.Reordered {
			p.m.Reordered.Inc()
			p.m.ReorderExtent.Observe(float64(r.Extent))
			if r.N >= tracker.NReordering {
				p.m.NReordered.Inc()
			}
		}
	case tracker.Duplicated:
		p.m.Duplicated.Inc()
	case tracker.Late:
		p.m.Late.Inc()
	case tracker.Stray:
		p.m.Stray.Inc()
	}
	if r.Resync {
		p.m.Resyncs.Inc()
	}
	return r
}

// expire settles what is due in both streams. Credit left once its gaps
// are settled (their numbers arrived after all) is dropped, so it cannot
// turn a later network loss into a local one.
func (p *peer) expire(now int64) {
	for _, s := range []*stream{p.cur, p.prev} {
		if s != nil {
			s.tr.Expire(now)
		}
	}
	if now >= p.creditUntil {
		p.credit = 0
	}
	p.pdv.expire(now, p.m.PDV)
}

// settle declares everything pending lost: the peer is being forgotten.
func (p *peer) settle() {
	for _, s := range []*stream{p.prev, p.cur} {
		if s != nil {
			s.tr.Settle()
		}
	}
}
