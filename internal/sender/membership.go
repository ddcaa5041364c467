package sender

import (
	"container/heap"
	"hash/fnv"
	"math"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/discovery"
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
			old.settled(int64(now.Sub(s.epoch))-s.readLag(), true)
			s.leaving = append(s.leaving[:i], s.leaving[i+1:]...)
			break
		}
	}
	session := s.session
	if s.known[w.Label] {
		session = randomSession() // a session number once ended is never reused
	}
	s.known[w.Label] = true
	size := s.size(w)
	slots := min(MaxBatch, max(1, batchBytes/size), int(math.Ceil(s.opts.Rate*max(CatchUp.Seconds(), 1/s.opts.Rate))))
	t := &target{label: w.Label, session: session, index: -1, stamp: w.STAMP, onReply: s.opts.OnReply,
		log: s.opts.Logger.With(zap.String("target", w.Label))}
	h := s.header
	h.Target, h.Session = []byte(w.Label), session
	h.HopLimit = s.hop6
	if a := w.Addr.Addr(); a.Is4() || a.Is4In6() {
		h.HopLimit = s.hop4
	}
	for range slots {
		if t.stamp {
			t.bufs = append(t.bufs, stampProbe(session, size, s.stampSign))
			continue
		}
		b := make([]byte, size)
		if err := wire.Encode(b, &h); err != nil {
			panic(err) // check passed
		}
		t.bufs = append(t.bufs, b)
	}
	t.to = w.Addr
	if s.opts.RoundTrip {
		t.rt = tracker.NewRoundTrip(int64(s.opts.LossTimeout), s.opts.Rate)
	}
	if t.stamp {
		t.rt.Unsplit() // until the reflector shows that it numbers its replies
		t.m = s.opts.Metrics.STAMPTarget(w.Label, t.roundTrip)
	} else {
		t.m = s.opts.Metrics.Target(w.Label, t.roundTrip)
	}
	interval := float64(time.Second) / s.opts.Rate
	hash := fnv.New64a()
	hash.Write([]byte(w.Label))
	phase := time.Duration(float64(hash.Sum64()%(1<<20)) / (1 << 20) * interval)
	t.sched = newSchedule(now.Add(phase), s.opts.Rate, len(t.bufs))
	t.due(s.epoch)
	s.active[w.Label] = t
	heap.Push(&s.queue, t)
	t.log.Info("probing a target", zap.Stringer("address", w.Addr), zap.Uint64("session", session))
}

// leave ends a target's session: goodbyes now, its series once its last
// replies are in.
func (s *Sender) leave(t *target, now time.Time) {
	heap.Remove(&s.queue, t.index)
	delete(s.active, t.label)
	s.goodbye(t)
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
		if !t.settled(mono, !now.Before(t.leaveBy)) {
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
