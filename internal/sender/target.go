package sender

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// target is one destination: its session, schedule, sequence numbers,
// datagrams and round trip. All but the round trip belong to Run's
// goroutine.
//
// The fields the sending loop reads for every datagram come first, and
// then those of a reply: with many targets each one's memory is cold by
// the time its next slot comes round, so that the fewer cache lines a
// datagram touches, the less it costs (docs/performance.md). The first
// three lines hold them all, the reply's round-trip histogram last; 384
// bytes is a size class of Go's allocator whose objects start on a line
// (TestTargetLayout).
type target struct {
	sched schedule
	seq   uint64
	w     writer
	// data are its datagrams, size bytes each, back to back, ready but for
	// flags, number, time and seal: one allocation a datagram reaches
	// through the target, not two.
	data    []byte
	size    uint16
	pending uint8 // datagrams of the batch being stamped (at most MaxBatch)
	stamp   bool  // a STAMP Session-Reflector: STAMP test packets, no goodbyes
	// stateful: the STAMP reflector numbers its replies, as one reply
	// showed; then its counts split the round trip's losses. Under mu.
	stateful       bool
	warnedWithheld bool // the reflector's holding back replies was logged
	// flow is the target's flow (Options.Flows): each of a target's flows
	// is a target of its own, sent from its own socket through w, and
	// flow 0's holds the others in flows. All share the metrics m.
	flow uint16
	mu   sync.Mutex // guards rt, expired, stateful and warnedWithheld, shared with the reply reader
	// sent counts the data datagrams the kernel accepted; scrapes read it.
	sent atomic.Uint64
	rt   *tracker.RoundTrip // nil without round trips
	// expired is the latest time the round trip was expired to: a reply
	// expires it to its arrival, and the sending loop need not once more
	// within an interval (untrack).
	expired int64
	to      netip.AddrPort
	session uint64
	// onReply is the sender's Options.OnReply.
	onReply func(target string, seq uint64, outcome tracker.ReplyOutcome, rtt time.Duration)
	m       metrics.SenderTarget // its RTT first

	flows     []*target
	label     string
	log       *zap.Logger
	leaveBy   time.Time // once it left: when its last replies are given up
	unlogged  uint64    // send errors since the last log line
	lastError error
	nextLog   time.Time
}

// slots is how many datagrams the target has ready: the most it sends at
// once.
func (t *target) slots() int { return len(t.data) / int(t.size) }

// buf is its datagram i.
func (t *target) buf(i int) []byte {
	n := int(t.size)
	return t.data[i*n : (i+1)*n : (i+1)*n]
}

// due is when the target's next slot is due, ns since the epoch: its key
// in the queue.
func (t *target) due() int64 { return t.sched.due(t.sched.next) }

// sendError logs the first error at once and then at most one line a minute
// with the count, so a dead target cannot flood the log.
func (t *target) sendError(err error, now time.Time) {
	t.m.SendErrors.Inc()
	t.unlogged++
	t.lastError = err
	if !now.Before(t.nextLog) {
		t.log.Warn("send failed; the datagram was not sent and used no sequence number",
			zap.Error(t.lastError), zap.Uint64("errors", t.unlogged))
		t.unlogged = 0
		t.nextLog = now.Add(errorLogEvery)
	}
}

// handleReply takes a reply to one of the target's datagrams (h decoded
// from it, valid says whether it is one), read at mono.
func (t *target) handleReply(h *wire.Header, valid bool, mono int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !valid:
		t.rt.Reject()
	case h.Goodbye():
		t.rt.Goodbye(report(h), mono)
	default:
		r := t.rt.Reply(h.Seq, report(h), mono)
		t.expired = max(t.expired, mono)
		if r.Outcome == tracker.ReplyAnswered {
			t.m.RTT.Observe(float64(r.RTT) / 1e9)
		}
		if t.onReply != nil {
			t.onReply(t.label, h.Seq, r.Outcome, time.Duration(r.RTT))
		}
		if h.Withheld > 0 && !t.warnedWithheld {
			t.warnedWithheld = true
			t.log.Warn("the reflector holds back replies to this sender: it sends faster than the receiver's "+
				"reflect rate limit allows; they count as withheld, not as loss, and their round trips are not "+
				"measured: raise the receiver's reflect rate limit above this sender's rate",
				zap.Float64("rate", t.sched.rate), zap.Uint64("withheld", h.Withheld))
		}
	}
}

// report is what a reply says besides the sequence number it answers.
func report(h *wire.Header) tracker.Report {
	return tracker.Report{Received: h.Received, Withheld: h.Withheld,
		Session: h.Legs.Session, Number: h.Legs.Number, Lost: h.Legs.Lost}
}

// handleSTAMP takes a STAMP reply from the target's address, read at
// mono. Its round-trip time leaves out the reflector's own time between
// receiving the test packet and replying (RFC 8762 section 4: (T4 − T1) −
// (T3 − T2)), as the reflector's two timestamps say, when they say it
// plausibly.
//
// A stateful reflector numbers its replies: the reply's number plus one
// is how many test packets it had answered, the count the round trip
// splits its losses by, as for udpprobe's own replies. A stateless one
// copies the test packet's number. The two look alike until a test packet
// is lost on the way there: from the first reply whose number differs
// from its test packet's, the reflector is known to be stateful and the
// losses are split; until then they have no direction.
func (t *target) handleSTAMP(r *stamp.Reflected, mono int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stateful && r.Seq != r.SenderSeq {
		t.stateful = true
		t.rt.Split()
		t.m.Stateful.Set(1)
		t.log.Info("the STAMP reflector numbers its replies (stateful): round-trip losses are split by direction from now on")
	}
	// The round trip's next number, not t.seq, which the sending loop
	// writes without the lock.
	seq := unwrap32(t.rt.Next(), r.SenderSeq)
	res := t.rt.Reply(seq, tracker.Report{Received: uint64(r.Seq) + 1}, mono)
	t.expired = max(t.expired, mono)
	rtt := res.RTT
	if res.Outcome == tracker.ReplyAnswered {
		if held := r.Timestamp.Time().Sub(r.ReceiveTimestamp.Time()); held >= 0 && int64(held) < rtt {
			rtt -= int64(held)
		}
		t.m.RTT.Observe(float64(rtt) / 1e9)
	}
	if t.onReply != nil {
		t.onReply(t.label, seq, res.Outcome, time.Duration(rtt))
	}
}

// unwrap32 is the latest sequence number sent before next whose low 32
// bits are low (replies come within a loss timeout, far fewer than 2^32
// numbers after their test packets), or, where none was sent yet, the
// number low itself, at or past next, for the round trip to refuse.
func unwrap32(next uint64, low uint32) uint64 {
	seq := next&^0xFFFFFFFF | uint64(low)
	if seq >= next && seq >= 1<<32 {
		seq -= 1 << 32
	}
	return seq
}

// reject counts a datagram from the target's address that is not a reply
// to it.
func (t *target) reject() {
	t.mu.Lock()
	t.rt.Reject()
	t.mu.Unlock()
}

// all is the target and its other flows.
func (t *target) all() []*target { return append([]*target{t}, t.flows...) }

// flowOf is the target's flow f, nil if it has none such.
func (t *target) flowOf(f uint16) *target {
	if f == 0 {
		return t
	}
	if int(f) <= len(t.flows) {
		return t.flows[f-1]
	}
	return nil
}

// sentAll is the data datagrams sent by all the target's flows.
func (t *target) sentAll() uint64 {
	n := t.sent.Load()
	for _, f := range t.flows {
		n += f.sent.Load()
	}
	return n
}

// roundTrips returns the round-trip totals of all the target's flows.
func (t *target) roundTrips() tracker.RoundTripCounts {
	c := t.roundTrip()
	for _, f := range t.flows {
		c = c.Add(f.roundTrip())
	}
	return c
}

// settledAll is settled for all the target's flows.
func (t *target) settledAll(mono int64, deadline bool) bool {
	done := true
	for _, f := range t.all() {
		done = f.settled(mono, deadline) && done
	}
	return done
}

// roundTrip returns the round-trip totals, all zero without round trips:
// the metrics read them at every scrape.
func (t *target) roundTrip() tracker.RoundTripCounts {
	if t.rt == nil {
		return tracker.RoundTripCounts{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rt.Counts()
}

// settled expires what is due at mono and reports whether every reply the
// target waits for is in; at or past the deadline it settles the rest.
func (t *target) settled(mono int64, deadline bool) bool {
	if t.rt == nil || t.seq == 0 {
		return true // nothing was sent, nothing will come back
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rt.Expire(mono)
	if t.rt.Settled() || deadline {
		t.rt.Settle()
		return true
	}
	return false
}

// drain waits, after the goodbyes, until every target's replies are in or
// the loss timeout has passed, and settles their round trips.
func (s *Sender) drain(ts []*target) {
	timer := s.clock.NewTimer()
	lag := s.readLag()
	for deadline := s.clock.Now().Add(s.opts.LossTimeout + time.Duration(lag)); ; {
		now := s.clock.Now()
		mono, late := int64(now.Sub(s.epoch))-lag, !now.Before(deadline)
		done := true
		for _, t := range ts {
			done = t.settledAll(mono, late) && done
		}
		if done {
			return
		}
		timer.Sleep(context.Background(), min(s.opts.LossTimeout/10, 10*time.Millisecond))
	}
}
