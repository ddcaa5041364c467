package receiver

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Instant is a moment on both of this host's clocks: Wall in nanoseconds
// since the Unix epoch (for one-way delay and last-packet times), Mono in
// nanoseconds on a monotonic clock (for everything that measures time
// passing: waiting times, jitter, expiry, rate limits).
type Instant struct{ Wall, Mono int64 }

// ReplyFunc sends a reply datagram to a probe's source.
type ReplyFunc func(b []byte, to netip.AddrPort) error

// Table is the receiver without its socket: the peers and their streams,
// the reply limiter, the ledger that attributes socket drops, and the
// warnings. It is driven by Handle for every datagram, SocketDropped for
// what the kernel dropped, and Housekeep for what time alone decides; every
// call takes the time as an argument. It is not safe for concurrent use,
// except that its peers' series are read at scrape time (see exported).
type Table struct {
	opts    Options
	log     *zap.Logger
	metrics *metrics.Receiver
	trOpts  tracker.Options
	auth    *wire.Auth  // nil: datagrams are not authenticated
	reply   ReplyFunc   // nil: no replies
	name    []byte      // the node's name, for hello replies
	hdr     wire.Header // the datagram Handle decodes
	arrived Traffic     // what its IP header said, where the socket read it
	// The reply buckets' shapes: each peer's, and the budgets of all
	// replies together (a zero rate: no budget), with the budgets' tokens.
	replies, packets, bytes bucket
	budget, budgetBytes     limiter
	invalid                 map[error]invalidCounter
	// peers is written only under mu, and read without it by the calls
	// above, which are its only writer; exported reads it under mu.
	mu    sync.RWMutex
	peers map[string]*peer // by peerKey
	// groups are the peers' series: a sender's flows (wire.Header.Flow)
	// to one target are peers of their own, and one group, by groupKey.
	groups map[string]*group
	key    []byte // peerKey's buffer
	peak   int    // the most peers the map has held since it was last rebuilt
	drops  ledger
	watch  watch
	stamp  *stampReflector // nil: no STAMP socket
	// delays decides whose one-way delays are recorded; every peer
	// shares it.
	delays delayGate

	scheduled   bool  // nextSummary and the watch's deadline are set
	nextSummary int64 // monotonic ns
}

type invalidCounter interface{ Inc() }

var reasons = map[error]string{
	wire.ErrTooShort: metrics.ReasonTooShort,
	wire.ErrMagic:    metrics.ReasonMagic,
	wire.ErrVersion:  metrics.ReasonVersion,
	wire.ErrHeader:   metrics.ReasonHeader,
	wire.ErrName:     metrics.ReasonName,
	errReply:         metrics.ReasonReply,
	wire.ErrAuth:     metrics.ReasonAuth,
}

// errReply marks a reply arriving at a receiver: a sender pointed at a
// sender, or reflected traffic looping back.
var errReply = errors.New("reply sent to a receiver")

// NewTable returns an empty table. The socket fields of opts are not used;
// with opts.Reflect, reply sends the replies.
func NewTable(opts Options, reply ReplyFunc) (*Table, error) {
	t := &Table{
		opts:    opts,
		log:     opts.Logger,
		metrics: opts.Metrics,
		trOpts:  tracker.Options{Timeout: int64(opts.LossTimeout)},
		replies: newBucket(opts.ReflectRate, 1),
		packets: newBucket(opts.ReflectBudget, 1),
		bytes:   newBucket(opts.ReflectBudgetBytes, wire.MaxSize),
		invalid: make(map[error]invalidCounter, len(reasons)),
		peers:   make(map[string]*peer),
		groups:  make(map[string]*group),
		drops:   ledger{timeout: int64(opts.LossTimeout)},
		name:    []byte(opts.Name),
		delays:  delayGate{bound: opts.DelayMaxError, maxError: clock.MaxErrorCeiling},
	}
	t.metrics.DelayMaxError.Set(math.Inf(1))
	if opts.DelayMaxError > 0 {
		t.metrics.DelayMaxError.Set(opts.DelayMaxError.Seconds())
	}
	if opts.Reflect {
		t.reply = reply
	}
	t.budget, t.budgetBytes = t.packets.full(), t.bytes.full()
	for err, reason := range reasons {
		t.invalid[err] = t.metrics.Invalid.WithLabelValues(reason)
	}
	if len(opts.Keys) > 0 {
		var err error
		if t.auth, err = wire.NewAuth(opts.Keys); err != nil {
			return nil, fmt.Errorf("authentication key: %w", err)
		}
	}
	t.metrics.Export(t.exported)
	return t, nil
}

// exported yields the instruments of every peer in the table: the series a
// scrape exports. It is called from the scraping goroutine.
func (t *Table) exported(yield func(*metrics.ReceiverPeer) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, g := range t.groups {
		if !yield(g.m) {
			return
		}
	}
}

// Len is how many peers the table holds.
func (t *Table) Len() int { return len(t.peers) }

// Handle takes one datagram from source that arrived at the given instant.
// A probe it answers is rewritten into its reply in place and sent.
func (t *Table) Handle(b []byte, from netip.AddrPort, at Instant) {
	t.HandleTraffic(b, from, at, Traffic{})
}

// HandleTraffic is Handle for a datagram whose IP header said tr: what
// the path did to the traffic class its sender set is counted.
func (t *Table) HandleTraffic(b []byte, from netip.AddrPort, at Instant, tr Traffic) {
	t.arrived = tr
	h := &t.hdr // not a local: a header handed to OnReply would escape
	if err := wire.Decode(b, h); err != nil {
		if err == wire.ErrChecksum {
			t.metrics.PacketsCorrupted.Inc()
			return
		}
		t.invalid[err].Inc()
		return
	}
	key := 0 // the key that authenticated b, for its reply
	if t.auth != nil {
		var err error
		if key, err = t.auth.Verify(b); err != nil {
			t.invalid[err].Inc()
			t.watch.unauthenticated(from)
			return
		}
	}
	if h.Reply() {
		if t.opts.OnReply != nil {
			t.opts.OnReply(h, b, from, at)
			return
		}
		t.invalid[errReply].Inc()
		return
	}
	if h.Hello() {
		t.hello(b, key, from, at.Mono)
		return
	}
	t.data(h, b, key, from, at)
}

// data counts a data datagram (or a goodbye) of the peer h names, and
// answers it if the table reflects.
func (t *Table) data(h *wire.Header, b []byte, key int, from netip.AddrPort, at Instant) {
	t.key = peerKey(t.key[:0], h.Name, h.Target, h.Flow)
	p := t.peers[string(t.key)]
	var prevSeen int64 // when the peer's previous first copy arrived
	if p == nil {
		if h.Goodbye() {
			return // nothing to close
		}
		if len(t.peers) >= t.opts.MaxPeers {
			t.metrics.PeerOverflow.Inc()
			t.watch.now.overflow++
			return
		}
		p = t.admit(string(t.key), string(h.Name), string(h.Target), h.Flow, at)
	} else {
		prevSeen = p.lastSeen
	}
	p.mark(h.TrafficClass, t.arrived)
	if t.opts.HopCount && p.flow == 0 { // flows may take paths of other lengths
		p.hop(h.HopLimit, t.arrived)
	}
	s := p.known(h.Session)
	if s == nil {
		onProbation := p.cand.copies > 0 && p.cand.session == h.Session
		switch {
		case h.Goodbye() && !(onProbation && p.cand.confirms(h)):
			return // nothing to close, or nothing plausible
		case p.stale(h):
			p.m.Stray.Inc()
			t.watch.stray(p)
			return
		case !onProbation || !p.cand.confirms(h):
			t.probation(p, onProbation, h, b, key, from, at)
			return
		}
		var restarted bool
		s, restarted = p.confirm(t.trOpts)
		prevSeen = p.cand.at.Mono
		if restarted {
			p.began = p.cand.at.Mono
			p.m.Restarts.Inc()
			t.log.Info("sender restarted: a new session began", zap.String("sender", p.name), zap.String("target", p.target),
				zap.Uint64("session", h.Session), zap.Uint64("first_sequence", uint64(s.firstSeq)))
		}
	}
	if h.Goodbye() {
		s.tr.Goodbye(h.Seq, at.Mono)
		t.metrics.Goodbyes.Inc()
		if s == p.cur {
			if p.flow == 0 {
				p.m.SessionEnded.Set(1)
			}
			p.pdv.endBy(at.Mono + t.trOpts.Timeout)
		}
		t.reflect(p, s, h, b, key, from, at.Mono)
		return
	}
	if s.tooOld(h, t.trOpts.Timeout) {
		p.m.Late.Inc()
		return
	}
	if s == p.prev && at.Mono-p.began > t.trOpts.Timeout {
		// A restarted sender's old session only drains: its datagrams were
		// in flight when the new one began. One that goes on sending past
		// the waiting time is another live sender with the same name.
		p.m.NameConflicts.Inc()
		t.watch.conflict(p, h.Session, p.cur.session)
	}
	res := p.observe(s, h, at)
	switch res.Outcome {
	case tracker.Received, tracker.Reordered:
		// Only a first copy in time is the sender heard: duplicates and
		// replays of old datagrams neither keep a dead sender alive nor
		// get a reply.
		p.heard(at)
		t.drops.attribute(p, prevSeen, res.Revealed, at.Mono)
		t.reflect(p, s, h, b, key, from, at.Mono)
	case tracker.Stray:
		t.watch.stray(p)
	}
}

// probation takes a data datagram of a session p does not know that does
// not confirm the session on probation (onProbation: it is of that
// session). A copy of the candidate is one more copy; any other datagram
// becomes the candidate, in place of the one held (RFC 3550 A.1: an
// implausible number restarts the probation), and is answered as its
// session's first.
func (t *Table) probation(p *peer, onProbation bool, h *wire.Header, b []byte, key int, from netip.AddrPort, at Instant) {
	if onProbation && int64(h.Seq) == p.cand.firstSeq {
		p.cand.copies++
		return
	}
	if p.cand.copies > 0 {
		t.watch.stray(p)
	}
	p.hold(h, at)
	t.reflect(p, &p.cand.stream, h, b, key, from, at.Mono)
}

// hello answers a hello, in b, with this node's name, if the table
// reflects, has a name, and the budget of all replies allows: a hello
// creates no peer and counts in no stream.
func (t *Table) hello(b []byte, key int, from netip.AddrPort, now int64) {
	t.metrics.Hellos.Inc()
	if t.reply == nil || t.opts.Name == "" || !t.withinBudget(now, len(b)) || !wire.MakeHelloReply(b, t.name) {
		return
	}
	if t.auth != nil {
		t.auth.Sign(b, key)
	}
	if err := t.reply(b, from); err != nil {
		t.watch.replyFailed(err)
		return
	}
	t.metrics.HellosAnswered.Inc()
}

// withinBudget takes a reply of size bytes from the budget of all replies,
// if it allows one now.
func (t *Table) withinBudget(now int64, size int) bool {
	if t.packets.rate > 0 && !t.budget.take(now, 1, t.packets) {
		return false
	}
	if t.bytes.rate > 0 && !t.budgetBytes.take(now, float64(size), t.bytes) {
		if t.packets.rate > 0 {
			t.budget.tokens++ // the reply is not sent: give its packet back
		}
		return false
	}
	return true
}

// SocketDropped takes n datagrams the kernel dropped at the socket before
// the one that arrived at mono (monotonic ns) was queued.
func (t *Table) SocketDropped(n uint64, mono int64) {
	t.metrics.SocketDrops.Add(float64(n))
	t.watch.now.socketDrops += n
	t.drops.dropped(n, mono)
}

// reflect sends the datagram in b back to where it came from as a reply
// carrying the stream's counts (stream.counts), if the table replies
// and the peer's rate allows (a goodbye's, up to three a session, always),
// signed under the key that authenticated b. b is rewritten in place.
func (t *Table) reflect(p *peer, s *stream, h *wire.Header, b []byte, key int, to netip.AddrPort, now int64) {
	answering := t.stamp != nil && t.stamp.answering
	if t.reply == nil && !answering {
		return
	}
	if answering {
		b = t.stamp.reply(s) // the size the budget meters is the reply's
	}
	if h.Goodbye() && s.goodbyeReplies < maxGoodbyeReplies {
		// The goodbye's reply carries the final counts the sender needs to
		// split its last losses: it passes the limit, a few per session.
		s.goodbyeReplies++
	} else if !p.limit.take(now, 1, t.replies) || !t.withinBudget(now, len(b)) {
		p.m.RepliesLimited.Inc()
		s.withheld++
		t.watch.withheld(p, s.sendRate(h))
		return
	}
	send := t.reply
	if !answering {
		wire.MakeReply(b, s.counts(h.Goodbye()))
		if t.auth != nil {
			t.auth.Sign(b, key)
		}
	}
	if !h.Goodbye() {
		s.replied++ // numbered, whether the send succeeds or not: a failed one is lost on the way back
	}
	if answering {
		send = t.stamp.send
	}
	if err := send(b, to); err != nil {
		t.metrics.ReplyErrors.Inc()
		t.watch.replyFailed(err)
		return
	}
	p.m.RepliesSent.Inc()
}

// peerKey appends the key of the peer table for a sender's name and the
// target it sent to: two senders of one name are one peer only if they
// name this receiver alike, and one sender reaching this receiver by two
// targets is two peers, so their paths never merge.
func peerKey(b, name, target []byte, flow uint16) []byte {
	b = append(b, name...)
	b = append(b, 0) // in neither a name nor a target
	b = append(b, target...)
	if flow > 0 {
		b = append(b, 0, byte(flow>>8), byte(flow))
	}
	return b
}

// groupKey is the key of the group of the peer whose key is peerKey's:
// its name and target, whatever its flow.
func groupKey(key string) string {
	if i := strings.IndexByte(key, 0); i >= 0 {
		if j := strings.IndexByte(key[i+1:], 0); j >= 0 {
			return key[:i+1+j]
		}
	}
	return key
}

// group is the series a sender's flows to one target share, and how many
// of its flows the table holds.
type group struct {
	m     *metrics.ReceiverPeer
	flows int
}

func (t *Table) admit(key, name, target string, flow uint16, at Instant) *peer {
	gk := groupKey(key)
	g := t.groups[gk]
	if g == nil {
		g = &group{m: t.metrics.NewPeer(name, target)}
		if t.opts.DepthMetrics {
			g.m.Deep()
		}
	}
	g.flows++
	p := &peer{name: name, target: target, flow: flow, m: g.m, fm: g.m.Flow(flow), limit: t.replies.full(),
		deep: t.opts.DepthMetrics, delays: &t.delays}
	p.heard(at)
	t.mu.Lock()
	t.peers[key] = p
	t.groups[gk] = g
	t.mu.Unlock()
	t.peak = max(t.peak, len(t.peers))
	t.log.Info("new peer", zap.String("sender", name), zap.String("target", target))
	return p
}

// Housekeep settles due losses, forgets silent peers (and so their series),
// and logs the summary and local problems when due.
func (t *Table) Housekeep(now Instant) {
	if !t.scheduled {
		t.scheduled = true
		t.nextSummary = now.Mono + int64(t.opts.SummaryInterval)
		t.watch.next = now.Mono
	}
	expiry := int64(t.opts.PeerExpiry)
	for key, p := range t.peers {
		if now.Mono-p.lastSeen >= expiry {
			p.settle()
			t.mu.Lock()
			delete(t.peers, key)
			gk := groupKey(key)
			if g := t.groups[gk]; g.flows == 1 {
				delete(t.groups, gk)
			} else {
				g.flows--
				g.m.DropFlow(p.flow) // its series go with it; the pair's stay
			}
			t.mu.Unlock()
			t.log.Info("peer expired: silent for the peer expiry, its series are deleted",
				zap.String("sender", p.name), zap.String("target", p.target), zap.Duration("peer_expiry", t.opts.PeerExpiry))
			continue
		}
		p.expire(now.Mono)
	}
	if t.peak > 64 && len(t.peers) <= t.peak/4 {
		// A Go map keeps the size it grew to; a new one, sized for the
		// peers left, lets a crowd come and go without leaving memory
		// behind.
		peers, groups := maps.Collect(maps.All(t.peers)), maps.Collect(maps.All(t.groups))
		t.mu.Lock()
		t.peers, t.groups = peers, groups
		t.mu.Unlock()
		t.peak = len(t.peers)
	}
	if t.opts.SummaryInterval > 0 && now.Mono >= t.nextSummary {
		t.summarize()
		t.nextSummary = now.Mono + int64(t.opts.SummaryInterval)
	}
	if now.Mono >= t.watch.next && t.warn() {
		t.watch.next = now.Mono + int64(warnEvery)
	}
}

// warnEvery limits how often local problems are logged.
const warnEvery = time.Minute
