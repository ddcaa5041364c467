package sender

import (
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// batch is the datagrams of one write, and for each its target and slot.
type batch struct {
	w    writer // of the flow every datagram of the batch is of
	bufs [][]byte
	to   []netip.AddrPort
	of   []*target
	seqs []uint64
	dues []int64 // ns since the epoch
}

func (b *batch) reset() {
	b.bufs, b.to, b.of, b.seqs, b.dues = b.bufs[:0], b.to[:0], b.of[:0], b.seqs[:0], b.dues[:0]
}

// drop removes the first n datagrams.
func (b *batch) drop(n int) {
	b.bufs, b.to, b.of, b.seqs, b.dues = b.bufs[n:], b.to[n:], b.of[n:], b.seqs[n:], b.dues[n:]
}

// sendDue sends the slots due at now, of every target, in batches.
func (s *Sender) sendDue(now time.Time) {
	b := &s.batch
	b.reset()
	mono := int64(now.Sub(s.epoch))
	for len(s.queue) > 0 {
		t := s.queue[0].t
		if s.queue[0].at > mono {
			break
		}
		room := MaxBatch - len(b.bufs)
		if room == 0 || t.pending > 0 || len(b.bufs) > 0 && t.w != b.w {
			// Full, or the target is in it already with all its buffers,
			// or it sends from another flow's socket.
			s.flush()
			mono = int64(s.clock.Now().Sub(s.epoch))
			continue
		}
		b.w = t.w
		n := len(b.dues)
		var skipped int64
		b.dues, skipped = t.sched.take(mono, min(room, t.slots()), b.dues)
		if skipped > 0 {
			s.opts.Metrics.MissedSlots.Add(float64(skipped))
		}
		for i := range len(b.dues) - n {
			b.bufs = append(b.bufs, t.buf(i))
			b.to = append(b.to, t.to)
			b.of = append(b.of, t)
		}
		t.pending = uint8(len(b.dues) - n)
		s.queue[0].at = t.due()
		s.queue.fix(0)
	}
	s.flush()
}

// flush writes the batch. A datagram the kernel refuses uses its slot but
// no sequence number: the ones after it are renumbered and sent.
func (s *Sender) flush() {
	b := &s.batch
	for len(b.bufs) > 0 {
		now, mono := s.stamp(b)
		s.track(b, mono)
		sent, err := b.w.Write(b.bufs, b.to)
		tried := min(len(b.bufs), sent+1)
		if err == nil {
			tried = sent
		}
		for i := range tried {
			s.opts.Metrics.ScheduleLateness.Observe(max(0, time.Duration(mono-b.dues[i]).Seconds()))
		}
		for i := range sent {
			t := b.of[i]
			t.seq++
			t.sent.Add(1)
		}
		s.sent += uint64(sent)
		s.untrack(b, sent, mono-s.readLag())
		if err == nil {
			break
		}
		b.of[sent].sendError(err, now)
		b.drop(sent + 1)
	}
	for _, t := range b.of {
		t.pending = 0
	}
	b.reset()
}

// stamp numbers the batch's datagrams from each target's next sequence
// number, and writes the send time into every one and seals it. The clocks
// are read once, after everything but the checksums is in place, as close
// to the write as they allow; it returns them.
func (s *Sender) stamp(b *batch) (now time.Time, mono int64) {
	b.seqs = b.seqs[:0]
	for _, t := range b.of {
		t.pending = 0
	}
	for i, buf := range b.bufs {
		t := b.of[i]
		seq := t.seq + uint64(t.pending)
		t.pending++
		b.seqs = append(b.seqs, seq)
		if t.stamp {
			continue // numbered with its time, below
		}
		wire.PutFlags(buf, 0)
		wire.PutSeq(buf, seq)
		wire.PutClock(buf, uint16(s.estimate))
	}
	now = s.clock.Now()
	mono = int64(now.Sub(s.epoch))
	for i, buf := range b.bufs {
		if b.of[i].stamp {
			stamp.Restamp(buf, uint32(b.seqs[i]), stamp.NTP(now), s.estimate, s.stampSign)
			continue
		}
		s.seal(buf, now, mono)
	}
	return now, mono
}

func (s *Sender) seal(b []byte, now time.Time, mono int64) {
	wire.PutSendTime(b, now.UnixNano(), mono)
	if s.sign != nil {
		s.sign.Sign(b, 0)
	} else {
		wire.Seal(b)
	}
}

// track tells the round trips about the batch's datagrams before they are
// written, so no reply can beat them.
func (s *Sender) track(b *batch, mono int64) {
	for i, t := range b.of {
		if t.rt != nil {
			t.mu.Lock()
			t.rt.Send(b.seqs[i], mono)
			t.mu.Unlock()
		}
	}
}

// untrack takes back what the kernel did not accept, newest first, and
// expires what is due by decided, the time up to which replies are read,
// unless a reply expired the round trip within the last interval: a reply
// expires it to its own arrival before it is counted, so that deciding
// sooner changes no count, only when a scrape sees it. (Expiring touches
// the round trip's memory, cold with many targets; without replies, a dead
// path, the sending loop expires it at every send.)
func (s *Sender) untrack(b *batch, sent int, decided int64) {
	for i := len(b.of) - 1; i >= 0; i-- {
		t := b.of[i]
		if t.rt == nil {
			continue
		}
		last := i == 0 || b.of[i-1] != t // once per target: its datagrams are adjacent
		if i < sent && !last {
			continue
		}
		t.mu.Lock()
		if i >= sent {
			t.rt.Unsend(b.seqs[i])
		}
		if last && decided-t.expired >= int64(t.sched.interval) {
			t.rt.Expire(decided)
			t.expired = decided
		}
		t.mu.Unlock()
	}
}

// goodbye ends a target's session: its sequence number is the last one
// sent. A STAMP target gets none: STAMP has no goodbye.
func (s *Sender) goodbye(t *target) {
	if t.seq == 0 || t.stamp {
		return // nothing was sent (nothing to settle), or STAMP
	}
	bye, to := [][]byte{t.buf(0)}, []netip.AddrPort{t.to}
	for range GoodbyeCopies {
		wire.PutFlags(bye[0], wire.FlagGoodbye)
		wire.PutSeq(bye[0], t.seq-1)
		now := s.clock.Now()
		s.seal(bye[0], now, int64(now.Sub(s.epoch)))
		if _, err := t.w.Write(bye, to); err != nil {
			t.sendError(err, now)
		}
	}
	t.log.Info("session ended with a goodbye", zap.Uint64("last_sequence", t.seq-1))
}
