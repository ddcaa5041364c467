package receiver

import (
	"math"
	"net/netip"
	"sort"
	"time"

	"go.uber.org/zap"
)

// summarize logs one line per peer with what happened since the last
// summary: the periodic report of the workshop receiver this project grew
// from. A sender's flows share their counts, so flow 0's peer speaks for
// them.
func (t *Table) summarize() {
	keys := make([]string, 0, len(t.peers))
	for key, p := range t.peers {
		if p.flow == 0 {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		p := t.peers[key]
		now := p.totals()
		d := now.since(p.reported)
		p.reported = now
		ratio := 0.0
		if d.received+d.lost > 0 {
			ratio = float64(d.lost) / float64(d.received+d.lost)
		}
		t.log.Info("summary", zap.String("sender", p.name), zap.String("target", p.target), zap.Duration("interval", t.opts.SummaryInterval),
			zap.Uint64("received", d.received), zap.Uint64("lost", d.lost), zap.Uint64("dropped_locally", d.local),
			zap.Uint64("duplicated", d.duplicated), zap.Uint64("reordered", d.reordered),
			zap.Uint64("late", d.late), zap.Uint64("replies_held_back", d.heldBack), zap.Float64("loss_ratio", ratio),
			zap.Duration("jitter", time.Duration(p.cur.timing.jitter)))
	}
}

// watch keeps the local problems worth a warning when they grow, and what
// the warning names. Strays are not local, but someone must look: a sender
// is broken, or datagrams are forged.
type watch struct {
	now, warned problems // totals so far, and at the last warning
	next        int64    // monotonic ns before which no warning is logged
	// What the warnings name: the latest reply error, the source of the
	// latest datagram that failed authentication, the sender and target
	// of the latest stray.
	lastReplyError      error
	lastUnauthenticated netip.AddrPort
	lastStray           [2]string
	lastConflict        conflict
	lastWithheld        [2]string // the sender and target of the latest reply held back
	lastWithheldRate    float64   // and the rate that sender sends at
}

// conflict is a name two live senders share: the sender and target, and
// the two sessions seen alternating.
type conflict struct {
	sender, target string
	sessions       [2]uint64
}

type problems struct {
	socketDrops, overflow, replyErrors, unauthenticated, stray, conflicts, withheld uint64
}

func (w *watch) withheld(p *peer, rate float64) {
	w.now.withheld++
	w.lastWithheld = [2]string{p.name, p.target}
	if rate > 0 {
		w.lastWithheldRate = rate
	}
}

func (w *watch) conflict(p *peer, old, cur uint64) {
	w.now.conflicts++
	w.lastConflict = conflict{sender: p.name, target: p.target, sessions: [2]uint64{old, cur}}
}

func (w *watch) unauthenticated(from netip.AddrPort) {
	w.now.unauthenticated++
	w.lastUnauthenticated = from
}

func (w *watch) stray(p *peer) {
	w.now.stray++
	w.lastStray = [2]string{p.name, p.target}
}

func (w *watch) replyFailed(err error) {
	w.now.replyErrors++
	w.lastReplyError = err
}

// warn logs socket drops, reply errors, failed authentication, stray
// datagrams, name conflicts and peer-table overflow, which a person must
// act on, when they
// grew since the last warning. It reports whether it logged.
func (t *Table) warn() bool {
	w := &t.watch
	now := w.now
	logged := false
	if d := now.socketDrops - w.warned.socketDrops; d > 0 {
		t.log.Warn("this host's socket receive buffer overflowed and the kernel dropped datagrams; "+
			"this is local, not network loss: raise the receive buffer and net.core.rmem_max, or give the receiver more CPU",
			zap.Uint64("dropped", d))
		logged = true
	}
	if d := now.replyErrors - w.warned.replyErrors; d > 0 {
		t.log.Warn("replies could not be sent; senders will count them as downstream loss",
			zap.Error(w.lastReplyError), zap.Uint64("failed", d))
		logged = true
	}
	if d := now.unauthenticated - w.warned.unauthenticated; d > 0 {
		t.log.Warn("datagrams failed authentication and were ignored: a sender without the key, with a wrong one, "+
			"or forged traffic; senders must sign with the receiver's key",
			zap.Uint64("ignored", d), zap.Stringer("last_source", w.lastUnauthenticated))
		logged = true
	}
	if d := now.stray - w.warned.stray; d > 0 {
		t.log.Warn("datagrams with sequence numbers implausibly far from their session's were ignored: "+
			"a broken sender, or forged datagrams (a shared key authenticates senders)",
			zap.Uint64("ignored", d), zap.String("last_sender", w.lastStray[0]), zap.String("last_target", w.lastStray[1]))
		logged = true
	}
	if d := now.conflicts - w.warned.conflicts; d > 0 {
		c := w.lastConflict
		t.log.Warn("two live senders share a name: datagrams of two sessions keep arriving under it, and their counts "+
			"merge into one; give each sender its own name",
			zap.String("sender", c.sender), zap.String("target", c.target),
			zap.Uint64s("sessions", c.sessions[:]), zap.Uint64("datagrams", d))
		logged = true
	}
	if d := now.withheld - w.warned.withheld; d > 0 {
		t.log.Warn("replies were held back under the reflect rate limit: a sender sends faster than the limit allows; "+
			"senders count them as withheld, not as loss, and measure no round trip for them: raise the limit above the senders' rates",
			zap.Float64("reflect_rate", t.opts.ReflectRate), zap.Float64("last_sender_rate", math.Round(w.lastWithheldRate)),
			zap.Uint64("withheld", d),
			zap.String("last_sender", w.lastWithheld[0]), zap.String("last_target", w.lastWithheld[1]))
		logged = true
	}
	if d := now.overflow - w.warned.overflow; d > 0 {
		t.log.Warn("the peer table is full; datagrams from new senders are ignored: raise the peer limit",
			zap.Int("max_peers", t.opts.MaxPeers), zap.Uint64("ignored", d))
		logged = true
	}
	w.warned = now
	return logged
}
