package sender

import (
	"hash/fnv"
	"math"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// apply makes ts the targets: new ones join, gone ones (or moved ones)
// leave.
func (s *Sender) apply(ts []discovery.Target, now time.Time) {
	want := make(map[string]discovery.Target, len(ts))
	for _, t := range ts {
		want[t.Label] = t
	}
	for label, t := range s.active {
		if w, ok := want[label]; !ok || w.Addr != t.to {
			s.leave(t, now)
		}
	}
	for _, w := range ts {
		if _, ok := s.active[w.Label]; !ok {
			if err := s.check(w); err != nil {
				s.opts.Logger.Warn("a target cannot be probed", zap.Error(err))
				continue
			}
			s.join(w, now)
		}
	}
	s.route()
	s.opts.Metrics.Targets.Set(float64(len(s.active)))
}

// join starts a session with a new target, its first slot a phase into the
// interval that its label decides.
func (s *Sender) join(w discovery.Target, now time.Time) {
	for i, old := range s.leaving {
		if old.label == w.Label {
			// Back before its last replies: the new session takes over the
			// label's series.
			old.settledAll(int64(now.Sub(s.epoch))-s.readLag(), true)
			s.leaving = append(s.leaving[:i], s.leaving[i+1:]...)
			break
		}
	}
	session := s.session
	if s.known[w.Label] {
		session = randomSession() // a session number once ended is never reused
	}
	s.known[w.Label] = true
	flows := 1
	if !w.STAMP {
		flows += len(s.extra)
	}
	// Each flow sends at its share of the rate, the flows' phases spread
	// over its interval from the target's own.
	rate := s.opts.Rate / float64(flows)
	interval := float64(time.Second) / rate
	hash := fnv.New64a()
	hash.Write([]byte(w.Label))
	phase := float64(hash.Sum64()%(1<<20)) / (1 << 20) * interval
	var t *target
	for f := range flows {
		ft := s.newFlow(w, uint16(f), session, rate)
		at := math.Mod(phase+float64(f)*interval/float64(flows), interval)
		ft.sched = newSchedule(int64(now.Sub(s.epoch)+time.Duration(at)), rate)
		if f == 0 {
			t = ft
		} else {
			t.flows = append(t.flows, ft)
		}
	}
	// The metrics read the flows' round trips at every scrape: they get
	// them all at once.
	if t.stamp {
		t.rt.Unsplit() // until the reflector shows that it numbers its replies
		t.m = s.opts.Metrics.STAMPTarget(w.Label, metrics.TargetCounts{Sent: t.sentAll, RoundTrips: t.roundTrip})
	} else {
		t.m = s.opts.Metrics.Target(w.Label, metrics.TargetCounts{Sent: t.sentAll, RoundTrips: t.roundTrips})
	}
	for _, ft := range t.all() {
		ft.m = t.m
		s.queue.push(slot{at: ft.due(), t: ft})
	}
	s.active[w.Label] = t
	t.log.Info("probing a target", zap.Stringer("address", w.Addr), zap.Uint64("session", session), zap.Int("flows", flows))
}

// newFlow is flow f of the target w, in the session, at rate: its
// datagrams, ready but for their numbers and times, and its round trip.
func (s *Sender) newFlow(w discovery.Target, f uint16, session uint64, rate float64) *target {
	size := s.size(w)
	slots := min(MaxBatch, max(1, batchBytes/size), int(math.Ceil(rate*max(CatchUp.Seconds(), 1/rate))))
	log := s.opts.Logger.With(zap.String("target", w.Label))
	if f > 0 {
		log = log.With(zap.Uint16("flow", f))
	}
	t := &target{label: w.Label, flow: f, w: s.writerOf(f), session: session, stamp: w.STAMP,
		onReply: s.opts.OnReply, log: log}
	h := s.header
	h.Target, h.Session, h.Flow = []byte(w.Label), session, f
	h.HopLimit = s.hop6
	if a := w.Addr.Addr(); a.Is4() || a.Is4In6() {
		h.HopLimit = s.hop4
	}
	t.size = uint16(size) // at most wire.MaxSize
	t.data = make([]byte, slots*size)
	for i := range slots {
		b := t.buf(i)
		if t.stamp {
			copy(b, stampProbe(session, size, s.stampSign))
			continue
		}
		if err := wire.Encode(b, &h); err != nil {
			panic(err) // check passed
		}
	}
	t.to = w.Addr
	if s.opts.RoundTrip {
		t.rt = tracker.NewRoundTrip(int64(s.opts.LossTimeout), rate)
	}
	return t
}

// leave ends a target's session: goodbyes now, its series once its last
// replies are in.
func (s *Sender) leave(t *target, now time.Time) {
	for _, f := range t.all() {
		if i := s.queue.find(f); i >= 0 {
			s.queue.remove(i)
		}
		s.goodbye(f)
	}
	delete(s.active, t.label)
	t.log.Info("the target is gone: its session ended", zap.Stringer("address", t.to))
	t.leaveBy = now.Add(s.opts.LossTimeout + time.Duration(s.readLag()))
	s.leaving = append(s.leaving, t)
}

// release forgets the targets that left once their replies are in.
func (s *Sender) release(now time.Time) {
	if len(s.leaving) == 0 {
		return
	}
	mono := int64(now.Sub(s.epoch)) - s.readLag()
	kept := s.leaving[:0]
	for _, t := range s.leaving {
		if !t.settledAll(mono, !now.Before(t.leaveBy)) {
			kept = append(kept, t)
			continue
		}
		if _, back := s.active[t.label]; !back {
			s.opts.Metrics.Forget(t.label)
		}
	}
	clear(s.leaving[len(kept):])
	if len(kept) != len(s.leaving) {
		s.leaving = kept
		s.route()
	}
}

// route publishes the targets, active and leaving, to the reply reader.
func (s *Sender) route() {
	r := &routes{byLabel: make(map[string]*target, len(s.active)+len(s.leaving)),
		byAddr: make(map[netip.AddrPort]*target, len(s.active)+len(s.leaving))}
	for _, t := range s.leaving {
		r.byLabel[t.label], r.byAddr[t.to] = t, t
	}
	for _, t := range s.active {
		r.byLabel[t.label], r.byAddr[t.to] = t, t
	}
	s.routes.Store(r)
}

// stampProbe is a STAMP test packet of size octets (the base of a's
// mode, or more with an Extra Padding TLV), its SSID the session's low 16
// bits (never 0, which TWAMP-Light senders have), ready but for its
// number, time and error estimate (stamp.Restamp).
func stampProbe(session uint64, size int, a *stamp.Auth) []byte {
	p := stamp.Test{SSID: uint16(session) | 1}
	if pad := size - stamp.BaseSizeOf(a) - stamp.TLVHeaderSize; pad >= 0 {
		p.TLVs = []stamp.TLV{{Type: stamp.TypeExtraPadding, Value: make([]byte, pad)}}
	}
	return p.Append(nil, a)
}
