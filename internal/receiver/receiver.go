// Package receiver runs the receiving side of udpprobe: it reads datagrams
// from one UDP socket, decodes them, keeps a bounded table of senders with a
// sequence tracker per session, and turns what the trackers decide into
// metrics and a periodic summary log line.
//
// Goroutines: Run is the only one. It owns the socket, the peer table and
// every tracker, so none of them needs a lock; housekeeping (loss deadlines,
// peer expiry, the summary) runs in the same goroutine, woken by the socket's
// read deadline. The socket is closed when Run's context is done, which ends
// the blocked read. Metrics are the only state other goroutines read.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Receiver.
type Options struct {
	ListenAddress   string
	LossTimeout     time.Duration
	SummaryInterval time.Duration // 0: no summary
	MaxPeers        int
	PeerExpiry      time.Duration
	ReceiveBuffer   int // bytes; 0 keeps the kernel default
	// Reflect sends every valid probe back to its source as a reply, at most
	// ReflectRate per second per peer, in bursts of up to a tenth of that.
	Reflect     bool
	ReflectRate float64
	// Keys, if any, authenticate datagrams (wire.Auth): the others are
	// counted as invalid and ignored, and replies are signed.
	Keys    [][]byte
	Logger  *zap.Logger
	Metrics *metrics.Receiver
}

// Receiver is a bound receiving socket and its state.
type Receiver struct {
	opts    Options
	log     *zap.Logger
	m       *metrics.Receiver
	conn    *net.UDPConn // for replies; closed by in.Unpoll when holding
	addr    netip.AddrPort
	epoch   time.Time // origin of the monotonic nanoseconds given to trackers
	trOpts  tracker.Options
	peers   map[string]*peer
	peak    int // the most peers r.peers has held since it was last rebuilt
	invalid map[error]invalidCounter
	in      *socket.Reader
	auth    *wire.Auth // nil: datagrams are not authenticated
	burst   float64    // reply token bucket depth

	hold      time.Duration // pause after a read that emptied the socket
	maxHold   time.Duration // 0: no pauses
	budget    int           // bytes of queue a hold may let build up
	queued    int           // kernel bytes read since the last pause, estimated
	holdTimer *time.Timer

	drops          uint32 // last SO_RXQ_OVFL value
	unattributed   uint64 // socket drops not yet matched to a peer's gap
	dropAt         int64  // monotonic ns of the datagram that reported the latest drops
	nextHouse      time.Time
	nextSummary    time.Time
	nextWarn       time.Time
	local          problems // totals so far
	warned         problems // totals at the last warning
	lastReplyError error    // for the warning about reply errors
	// lastUnauthenticated is the source of the latest datagram that failed
	// authentication, for the warning.
	lastUnauthenticated netip.AddrPort
	lastStray           string // the peer of the latest stray datagram
}

type invalidCounter interface{ Inc() }

// problems are local counts worth a warning when they grow.
// Strays are not local, but someone must look: a sender is broken, or
// datagrams are forged.
type problems struct{ socketDrops, overflow, replyErrors, unauthenticated, stray uint64 }

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

// warnEvery limits how often local problems are logged.
const warnEvery = time.Minute

// MaxHold is the longest the receiver waits, after a read that emptied the
// socket, before it reads again, with a receive buffer of 4 MiB; smaller
// buffers get proportionally shorter holds. At low and moderate rates one
// wake-up then takes many datagrams instead of one, which is most of the
// CPU a datagram costs. Arrival times are the kernel's timestamps, so the
// hold changes no measurement; it is off when reflecting (a reply must
// leave at once) and where the kernel does not timestamp. A step to 200,000
// small datagrams/s during a hold fills about a quarter of the buffer, and
// the hold adapts to what the reads find (see Receiver.pause).
const MaxHold = 10 * time.Millisecond

// ReadBatch is how many datagrams one read takes off the socket at most
// (recvmmsg on Linux). Each has a slot of the largest datagram; the slots'
// pages are resident only as far as datagrams have reached into them.
const ReadBatch = 64

// New binds the socket; the receiver is ready to count once it returns.
func New(opts Options) (*Receiver, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return errors.Join(socket.EnableDrops(c), socket.EnableTimestamps(c))
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", opts.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on UDPPROBE_LISTEN_ADDRESS=%s: %w", opts.ListenAddress, err)
	}
	conn := pc.(*net.UDPConn)
	r := &Receiver{
		opts:    opts,
		log:     opts.Logger,
		m:       opts.Metrics,
		conn:    conn,
		addr:    conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		epoch:   time.Now(),
		trOpts:  tracker.Options{Timeout: int64(opts.LossTimeout)},
		peers:   make(map[string]*peer),
		invalid: make(map[error]invalidCounter, len(reasons)),
		burst:   max(1, opts.ReflectRate/10),
	}
	for err, reason := range reasons {
		r.invalid[err] = r.m.Invalid.WithLabelValues(reason)
	}
	if len(opts.Keys) > 0 {
		if r.auth, err = wire.NewAuth(opts.Keys); err != nil {
			conn.Close()
			return nil, fmt.Errorf("UDPPROBE_HMAC_KEY: %w", err)
		}
	}
	// One byte more than the largest datagram, so that a longer one is cut
	// to a length the decoder rejects instead of to one it accepts.
	if r.in, err = socket.NewReader(conn, ReadBatch, wire.MaxSize+1); err != nil {
		conn.Close()
		return nil, err
	}
	err = r.setBuffer()
	if err == nil && r.maxHold > 0 {
		// Between holds, datagrams arriving must not wake the runtime's
		// poller; replies, which need the connection, never hold.
		err = r.in.Unpoll()
	}
	if err != nil {
		r.in.Close()
		return nil, err
	}
	return r, nil
}

func (r *Receiver) setBuffer() error {
	raw, err := r.conn.SyscallConn()
	if err != nil {
		return err
	}
	granted, err := socket.SetReceiveBuffer(raw, r.opts.ReceiveBuffer)
	if err != nil {
		return fmt.Errorf("set the receive buffer: %w", err)
	}
	r.m.ReceiveBuffer.Set(float64(granted))
	if socket.Timestamps && !r.opts.Reflect {
		r.maxHold = min(MaxHold, time.Duration(float64(MaxHold)*float64(granted)/float64(4<<20)))
		r.hold = r.maxHold
		r.budget = granted / 2 // the kernel's limit is twice the granted size
		r.holdTimer = time.NewTimer(time.Hour)
		r.holdTimer.Stop()
	}
	if granted > 0 && granted < r.opts.ReceiveBuffer {
		r.log.Warn("the kernel granted a smaller receive buffer than requested; bursts may be dropped "+
			"in this host's socket (udpprobe_receiver_socket_drops_total), not in the network. "+
			"Raise net.core.rmem_max or run with CAP_NET_ADMIN",
			zap.Int("requested_bytes", r.opts.ReceiveBuffer), zap.Int("granted_bytes", granted))
	}
	return nil
}

// Addr is the bound address.
func (r *Receiver) Addr() netip.AddrPort { return r.addr }

// Run receives until ctx is done. It closes the socket on return.
func (r *Receiver) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.in.Close() })
	defer stop()
	defer r.in.Close()
	now := time.Now()
	r.nextHouse = now
	r.nextSummary = now.Add(r.opts.SummaryInterval)
	r.nextWarn = now
	r.log.Info("receiving", zap.Stringer("address", r.Addr()),
		zap.Duration("loss_timeout", r.opts.LossTimeout), zap.Int("max_peers", r.opts.MaxPeers),
		zap.Bool("kernel_timestamps", socket.Timestamps), zap.Bool("reflect", r.opts.Reflect))
	for {
		if !now.Before(r.nextHouse) {
			r.housekeep(now)
			if err := r.in.SetDeadline(r.nextHouse); err != nil && ctx.Err() == nil {
				return err
			}
		}
		msgs, err := r.in.Read()
		now = time.Now()
		if err != nil {
			if ctx.Err() != nil {
				r.log.Info("receiver stopped")
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("read: %w", err)
		}
		readWall, readMono := now.UnixNano(), int64(now.Sub(r.epoch))
		stamped := true
		for i := range msgs {
			stamped = stamped && msgs[i].Control.HasTime
			r.queued += len(msgs[i].Buf) + skbOverhead
			r.receive(&msgs[i], readWall, readMono)
		}
		if r.maxHold > 0 && len(msgs) < ReadBatch && stamped {
			r.pause(ctx)
		}
	}
}

// skbOverhead is roughly what the kernel charges a queued datagram beyond
// its bytes (832 bytes for a 60-byte datagram on Linux 6 x86-64), rounded up.
const skbOverhead = 1024

// minHold is the shortest hold; a shorter one would save no wake-ups.
const minHold = 50 * time.Microsecond

// pause holds the receiver after a read that emptied the socket. It first
// adapts the hold to what queued up since the last pause: over the budget
// (a quarter of the kernel's limit) it shrinks fourfold, under an eighth of
// the budget it doubles, up to the maximum.
func (r *Receiver) pause(ctx context.Context) {
	switch {
	case r.queued > r.budget:
		r.hold = max(minHold, r.hold/4)
	case r.queued < r.budget/8:
		r.hold = min(r.maxHold, 2*r.hold)
	}
	r.queued = 0
	r.holdTimer.Reset(r.hold)
	select {
	case <-ctx.Done():
		r.holdTimer.Stop()
	case <-r.holdTimer.C:
	}
}

// receive takes one datagram of a batch read at readWall and readMono. Each
// carries the socket's drop count as of its own arrival, so drops are placed
// between the right two datagrams of a batch.
func (r *Receiver) receive(m *socket.Message, readWall, readMono int64) {
	wall, mono := socket.Arrival(m.Control, readWall, readMono)
	if c := m.Control; c.HasDrops && c.Drops != r.drops {
		r.socketDropped(uint64(c.Drops-r.drops), mono) // uint32 arithmetic survives the wrap
		r.drops = c.Drops
	}
	r.handle(m.Buf, m.From, wall, mono)
}

// handle processes one datagram from addr that arrived at wall (ns since the
// Unix epoch) and mono (ns since r.epoch).
func (r *Receiver) handle(b []byte, from netip.AddrPort, wall, mono int64) {
	var h wire.Header
	if err := wire.Decode(b, &h); err != nil {
		if err == wire.ErrChecksum {
			r.m.PacketsCorrupted.Inc()
			return
		}
		r.invalid[err].Inc()
		return
	}
	key := 0 // the key that authenticated b, for its reply
	if r.auth != nil {
		var err error
		if key, err = r.auth.Verify(b); err != nil {
			r.invalid[err].Inc()
			r.local.unauthenticated++
			r.lastUnauthenticated = from
			return
		}
	}
	if h.Reply() {
		r.invalid[errReply].Inc()
		return
	}
	p := r.peers[string(h.Name)]
	if p == nil {
		if h.Goodbye() {
			return // nothing to close
		}
		if len(r.peers) >= r.opts.MaxPeers {
			r.m.PeerOverflow.Inc()
			r.local.overflow++
			return
		}
		p = r.admit(string(h.Name))
	}
	prevSeen := p.lastSeen
	p.lastSeen, p.lastWall = mono, float64(wall)/1e9
	if h.Goodbye() {
		if s := p.known(h.Session); s != nil {
			s.tr.Goodbye(h.Seq, mono)
			p.m.Goodbyes.Inc()
			r.reflect(p, s, b, key, from, mono)
		}
		return
	}
	s, restarted := p.streamFor(h.Session, r.trOpts)
	if restarted {
		p.m.Restarts.Inc()
		r.log.Info("sender restarted: a new session began", zap.String("peer", p.name),
			zap.Uint64("session", h.Session), zap.Uint64("first_sequence", h.Seq))
	}
	res := p.observe(s, &h, wall, mono)
	if res.Outcome == tracker.Stray {
		r.local.stray++
		r.lastStray = p.name
	}
	r.attribute(p, prevSeen, res.Revealed, mono)
	r.reflect(p, s, b, key, from, mono)
}

// socketDropped takes n datagrams the kernel dropped at the socket before
// the one that arrived at now was queued.
func (r *Receiver) socketDropped(n uint64, now int64) {
	r.m.SocketDrops.Add(float64(n))
	r.local.socketDrops += n
	r.unattributed += n
	r.dropAt = now
}

// attribute matches socket drops to the gap a datagram of p just revealed,
// so that they are counted as dropped locally and not as lost. The drops
// happened before r.dropAt; the gap can hold them if p's previous datagram
// arrived before that. With one sender this is exact, as long as the socket
// drops only first copies: every number the socket dropped is missing from
// the gap the next datagram reveals. With several, a peer whose gap spans the
// drops takes as many as it can, first come first served; the total stays
// the kernel's count. Drops no gap claims within the loss timeout are left
// unattributed (they were duplicates, or another peer's that never showed).
func (r *Receiver) attribute(p *peer, prevSeen int64, revealed uint64, now int64) {
	if r.unattributed == 0 {
		return
	}
	if now-r.dropAt >= int64(r.opts.LossTimeout) {
		r.unattributed = 0
		return
	}
	if revealed == 0 || prevSeen >= r.dropAt {
		return
	}
	n := min(r.unattributed, revealed)
	r.unattributed -= n
	p.credit += n
	p.creditUntil = now + int64(r.opts.LossTimeout)
}

// reflect sends the datagram in b back to where it came from as a reply
// carrying the stream's received count, if reflecting is on and the peer's
// rate allows, signed under the key that authenticated b. b is rewritten in
// place.
func (r *Receiver) reflect(p *peer, s *stream, b []byte, key int, to netip.AddrPort, now int64) {
	if !r.opts.Reflect {
		return
	}
	if !p.limit.allow(now, r.opts.ReflectRate, r.burst) {
		p.m.RepliesLimited.Inc()
		return
	}
	wire.MakeReply(b, s.got)
	if r.auth != nil {
		r.auth.Sign(b, key)
	}
	if _, err := r.conn.WriteToUDPAddrPort(b, to); err != nil {
		p.m.ReplyErrors.Inc()
		r.local.replyErrors++
		r.lastReplyError = err
		return
	}
	p.m.RepliesSent.Inc()
}

func (r *Receiver) admit(name string) *peer {
	p := &peer{name: name, m: r.m.Peer(name), limit: limiter{tokens: r.burst}}
	r.peers[name] = p
	r.peak = max(r.peak, len(r.peers))
	r.m.Peers.Set(float64(len(r.peers)))
	r.log.Info("new peer", zap.String("peer", name))
	return p
}

// housekeep settles due losses, forgets silent peers, exports last-packet
// times, and logs the summary and local problems when due.
func (r *Receiver) housekeep(now time.Time) {
	mono := int64(now.Sub(r.epoch))
	expiry := int64(r.opts.PeerExpiry)
	for name, p := range r.peers {
		if mono-p.lastSeen >= expiry {
			p.settle()
			r.m.DeletePeer(name)
			delete(r.peers, name)
			r.m.Peers.Set(float64(len(r.peers)))
			r.log.Info("peer expired: silent for UDPPROBE_PEER_EXPIRY, its series are deleted",
				zap.String("peer", name), zap.Duration("peer_expiry", r.opts.PeerExpiry))
			continue
		}
		p.expire(mono)
		if p.lastWall != p.shown {
			p.m.LastPacket.Set(p.lastWall)
			p.shown = p.lastWall
		}
	}
	if r.peak > 64 && len(r.peers) <= r.peak/4 {
		// A Go map keeps the size it grew to; a new one, sized for the
		// peers left, lets a crowd come and go without leaving memory
		// behind (the series' own map does the same).
		r.peers = maps.Collect(maps.All(r.peers))
		r.peak = len(r.peers)
	}
	if r.opts.SummaryInterval > 0 && !now.Before(r.nextSummary) {
		r.summarize()
		r.nextSummary = now.Add(r.opts.SummaryInterval)
	}
	if !now.Before(r.nextWarn) && r.warnLocalProblems() {
		r.nextWarn = now.Add(warnEvery)
	}
	r.nextHouse = now.Add(houseInterval(r.opts.LossTimeout))
}

// houseInterval is how often loss deadlines are checked without traffic: a
// quarter of the loss timeout, within 10 to 250 ms.
func houseInterval(lossTimeout time.Duration) time.Duration {
	return min(max(lossTimeout/4, 10*time.Millisecond), 250*time.Millisecond)
}
