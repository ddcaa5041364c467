package receiver

import (
	"sort"
	"time"

	"go.uber.org/zap"
)

// summarize logs one line per peer with what happened since the last
// summary: the periodic report of the workshop receiver this project grew from.
func (r *Receiver) summarize() {
	names := make([]string, 0, len(r.peers))
	for name := range r.peers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := r.peers[name]
		d := tally{
			received:   p.total.received - p.reported.received,
			lost:       p.total.lost - p.reported.lost,
			local:      p.total.local - p.reported.local,
			duplicated: p.total.duplicated - p.reported.duplicated,
			reordered:  p.total.reordered - p.reported.reordered,
			late:       p.total.late - p.reported.late,
		}
		p.reported = p.total
		ratio := 0.0
		if d.received+d.lost > 0 {
			ratio = float64(d.lost) / float64(d.received+d.lost)
		}
		r.log.Info("summary", zap.String("peer", name), zap.Duration("interval", r.opts.SummaryInterval),
			zap.Uint64("received", d.received), zap.Uint64("lost", d.lost), zap.Uint64("dropped_locally", d.local),
			zap.Uint64("duplicated", d.duplicated), zap.Uint64("reordered", d.reordered),
			zap.Uint64("late", d.late), zap.Float64("loss_ratio", ratio),
			zap.Duration("jitter", time.Duration(p.cur.timing.jitter)))
	}
}

// warnLocalProblems logs socket drops, reply errors, failed authentication,
// stray datagrams and peer-table overflow, which a person must act on, when
// they grew since the last warning. It reports whether it logged.
func (r *Receiver) warnLocalProblems() bool {
	now := r.local
	logged := false
	if d := now.socketDrops - r.warned.socketDrops; d > 0 {
		r.log.Warn("this host's socket receive buffer overflowed and the kernel dropped datagrams; "+
			"this is local, not network loss: raise UDPPROBE_RECEIVE_BUFFER and net.core.rmem_max, or give the receiver more CPU",
			zap.Uint64("dropped", d))
		logged = true
	}
	if d := now.replyErrors - r.warned.replyErrors; d > 0 {
		r.log.Warn("replies could not be sent; senders will count them as downstream loss",
			zap.Error(r.lastReplyError), zap.Uint64("failed", d))
		logged = true
	}
	if d := now.unauthenticated - r.warned.unauthenticated; d > 0 {
		r.log.Warn("datagrams failed authentication and were ignored: a sender without the key, with a wrong one, "+
			"or forged traffic; senders must use a key in UDPPROBE_HMAC_KEY",
			zap.Uint64("ignored", d), zap.Stringer("last_source", r.lastUnauthenticated))
		logged = true
	}
	if d := now.stray - r.warned.stray; d > 0 {
		r.log.Warn("datagrams with sequence numbers implausibly far from their session's were ignored: "+
			"a broken sender, or forged datagrams (UDPPROBE_HMAC_KEY authenticates senders)",
			zap.Uint64("ignored", d), zap.String("last_peer", r.lastStray))
		logged = true
	}
	if d := now.overflow - r.warned.overflow; d > 0 {
		r.log.Warn("the peer table is full; datagrams from new senders are ignored: raise UDPPROBE_MAX_PEERS",
			zap.Int("max_peers", r.opts.MaxPeers), zap.Uint64("ignored", d))
		logged = true
	}
	r.warned = now
	return logged
}
