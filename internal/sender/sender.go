// Package sender runs the sending side of udpprobe: to each target, at a
// fixed rate, a datagram with the next sequence number.
//
// Goroutines: Run starts one per target and returns when all have ended. Each
// owns its target's connected UDP socket and datagram buffer; nothing is
// shared between them but the metrics.
//
// Sequence numbers count datagrams the kernel accepted: a send error does
// not consume one, so the receiver never mistakes a local failure for
// network loss. The schedule is drift-free: datagram slot k is due at
// start + k/rate. Slots a late wake-up delays by up to CatchUp (or one
// interval, if longer) are sent at once; a sender stalled for longer skips
// the older slots and counts them as missed instead of bursting to catch up.
//
// With RoundTrip, each target also has a reader goroutine that takes the
// replies of a reflecting receiver off the same socket and feeds the
// target's round-trip tracker (tracker.RoundTrip), which the two goroutines
// and the metrics' scrapes share under a mutex.
// On shutdown the sender waits up to the loss timeout for the last replies
// and the goodbye's reply, so a finite run is counted to its end.
package sender

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Sender.
type Options struct {
	Targets     []string // host:port, also the peer label
	Rate        float64  // datagrams per second per target
	PayloadSize int
	Name        string
	// RoundTrip expects every datagram back from a reflecting receiver and
	// judges the round trip with LossTimeout as the waiting time.
	RoundTrip   bool
	LossTimeout time.Duration
	// Keys, if any, authenticate every datagram (wire.Auth): the first
	// signs; a reply must carry a tag under one of them.
	Keys    [][]byte
	Logger  *zap.Logger
	Metrics *metrics.Sender
	// Session overrides the random session id; zero means random.
	Session uint64
	Clock   clock.Clock // nil: clock.Real
}

// GoodbyeCopies is how many goodbye datagrams end a session, so that the loss
// of one rarely leaves the receiver waiting.
const GoodbyeCopies = 3

// errorLogEvery limits send-error logging per target.
const errorLogEvery = time.Minute

// MaxBatch is the most datagrams one write sends (sendmmsg on Linux). A
// batch holds only slots already due, so batches form only when the rate
// outruns the timer's wake-ups. Their datagrams share one send time taken
// just before the write: the kernel's time to send the earlier ones of a
// batch (about a microsecond each) adds to a datagram's measured delay,
// which a small batch keeps small.
const MaxBatch = 16

// MaxRate is the highest rate a schedule can keep: one datagram a nanosecond.
const MaxRate = 1e9

// batchBytes bounds a target's datagram buffers for large payloads.
const batchBytes = 256 << 10

// Sender sends to every target.
type Sender struct {
	opts    Options
	session uint64
	targets []*target
}

// conn is a connected UDP socket: *net.UDPConn, or a fake in tests.
type conn interface {
	ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error)
	Close() error
}

// writer sends a batch of datagrams on the target's socket: a
// socket.Writer, or a fake in tests. It returns how many the kernel
// accepted and, if not all, why the next one was refused.
type writer interface {
	Write(bufs [][]byte) (int, error)
}

type target struct {
	addr    string
	conn    conn
	out     writer
	bufs    [][]byte // MaxBatch datagrams, or fewer for large payloads
	sched   schedule
	clock   clock.Clock
	m       metrics.SenderTarget
	log     *zap.Logger
	seq     uint64    // next sequence number
	epoch   time.Time // origin of the send clock and of rt's times
	session uint64
	name    string
	rate    float64 // datagrams per second
	// sign and verify authenticate what is sent and the replies; two,
	// because sending and reading replies run concurrently. nil without keys.
	sign, verify *wire.Auth

	mu             sync.Mutex         // guards rt and warnedWithheld
	rt             *tracker.RoundTrip // nil without RoundTrip
	warnedWithheld bool               // the reflector's holding back replies was logged

	unlogged  uint64 // send errors since the last log line
	lastError error
	nextLog   time.Time
}

// New resolves and connects to every target.
func New(opts Options) (*Sender, error) {
	if !(opts.Rate > 0 && opts.Rate <= MaxRate) {
		// The schedule divides by the interval, which must be a nanosecond at least.
		return nil, fmt.Errorf("rate %v: want more than 0 and at most %v datagrams per second", opts.Rate, MaxRate)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	s := &Sender{opts: opts, session: opts.Session}
	if s.session == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		s.session = binary.BigEndian.Uint64(b[:]) | 1 // never zero
	}
	for _, addr := range opts.Targets {
		t, err := s.dial(addr)
		if err != nil {
			s.close()
			return nil, err
		}
		s.targets = append(s.targets, t)
	}
	return s, nil
}

func (s *Sender) dial(addr string) (*target, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", addr, err)
	}
	uc := c.(*net.UDPConn)
	batch := min(MaxBatch, max(1, batchBytes/max(1, s.opts.PayloadSize)))
	out, err := socket.NewWriter(uc, batch)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("target %s: %w", addr, err)
	}
	t := &target{
		addr:    addr,
		conn:    uc,
		out:     out,
		clock:   s.opts.Clock,
		log:     s.opts.Logger.With(zap.String("target", addr)),
		epoch:   s.opts.Clock.Now(),
		session: s.session,
		name:    s.opts.Name,
		rate:    s.opts.Rate,
	}
	t.m = s.opts.Metrics.Target(addr, t.roundTrip)
	if s.opts.RoundTrip {
		t.rt = tracker.NewRoundTrip(int64(s.opts.LossTimeout), s.opts.Rate)
		raw, err := uc.SyscallConn()
		if err == nil {
			err = socket.EnableTimestamps(raw)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("target %s: receive timestamps: %w", addr, err)
		}
	}
	// The datagram names the target as given, for the receiver's target
	// label.
	h := wire.Header{Session: s.session, Name: []byte(s.opts.Name), Target: []byte(addr)}
	if len(s.opts.Keys) > 0 {
		t.sign, err = wire.NewAuth(s.opts.Keys)
		if err == nil {
			t.verify, err = wire.NewAuth(s.opts.Keys)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("authentication key: %w", err)
		}
		h.TagLen = wire.TagSize
	}
	for range batch {
		b := make([]byte, s.opts.PayloadSize)
		if err := wire.Encode(b, &h); err != nil {
			c.Close()
			return nil, fmt.Errorf("encode for %s: %w", addr, err)
		}
		t.bufs = append(t.bufs, b)
	}
	return t, nil
}

func (s *Sender) close() {
	for _, t := range s.targets {
		t.conn.Close()
	}
}

// Session is this process's session id.
func (s *Sender) Session() uint64 { return s.session }

// Run sends until ctx is done, then ends each session with a goodbye, waits
// for the last replies if it expects any, and closes the sockets.
func (s *Sender) Run(ctx context.Context) error {
	interval := time.Duration(float64(time.Second) / s.opts.Rate)
	s.opts.Logger.Info("sending", zap.Strings("targets", s.opts.Targets), zap.String("name", s.opts.Name),
		zap.Float64("rate", s.opts.Rate), zap.Int("payload_size", s.opts.PayloadSize),
		zap.Duration("interval", interval), zap.Uint64("session", s.session),
		zap.Bool("round_trip", s.opts.RoundTrip))
	var senders, readers sync.WaitGroup
	for _, t := range s.targets {
		if t.rt != nil {
			readers.Go(t.readReplies)
		}
		senders.Go(func() {
			t.run(ctx, s.opts.Rate)
			t.drain(s.opts.LossTimeout)
		})
	}
	senders.Wait()
	s.close() // ends the readers
	readers.Wait()
	return nil
}

func (t *target) run(ctx context.Context, rate float64) {
	t.sched = newSchedule(t.clock.Now(), rate, len(t.bufs))
	timer := t.clock.NewTimer()
	for {
		if wait := t.sched.wait(t.clock.Now()); wait > 0 {
			if !timer.Sleep(ctx, wait) {
				t.goodbye()
				return
			}
		} else if ctx.Err() != nil {
			t.goodbye()
			return
		}
		dues, skipped := t.sched.take(t.clock.Now())
		if skipped > 0 {
			t.m.MissedSlots.Add(float64(skipped))
		}
		t.send(dues)
	}
}

// send writes one data datagram for each slot in dues, with the next
// sequence numbers, as one batch. A datagram the kernel refuses uses its
// slot but no sequence number: those after it are renumbered and sent.
func (t *target) send(dues []time.Time) {
	for len(dues) > 0 {
		bufs := t.bufs[:len(dues)]
		now, mono := t.stamp(bufs, t.seq, 0)
		if t.rt != nil {
			t.mu.Lock()
			for i := range bufs {
				t.rt.Send(t.seq+uint64(i), mono) // before the write, so no reply can beat it
			}
			t.mu.Unlock()
		}
		sent, err := t.out.Write(bufs)
		tried := sent
		if err != nil {
			tried++
		}
		for _, d := range dues[:tried] {
			t.m.ScheduleLateness.Observe(max(0, now.Sub(d).Seconds()))
		}
		if t.rt != nil {
			t.mu.Lock()
			for i := len(bufs) - 1; i >= sent; i-- {
				t.rt.Unsend(t.seq + uint64(i))
			}
			t.rt.Expire(mono)
			t.mu.Unlock()
		}
		t.seq += uint64(sent)
		t.m.PacketsSent.Add(float64(sent))
		if err == nil {
			return
		}
		t.m.SendErrors.Inc()
		t.sendError(err)
		dues = dues[tried:]
	}
}

// stamp writes flags, consecutive sequence numbers from seq and the send
// time into each datagram of bufs and seals it. The clocks are read once,
// after everything but the checksums is in place, as close to the write as
// they allow; it returns them.
func (t *target) stamp(bufs [][]byte, seq uint64, flags wire.Flags) (now time.Time, mono int64) {
	for i, b := range bufs {
		wire.PutFlags(b, flags)
		wire.PutSeq(b, seq+uint64(i))
	}
	now = t.clock.Now()
	mono = int64(now.Sub(t.epoch))
	for _, b := range bufs {
		wire.PutSendTime(b, now.UnixNano(), mono)
		if t.sign != nil {
			t.sign.Sign(b, 0)
		} else {
			wire.Seal(b)
		}
	}
	return now, mono
}

// sendError logs the first error at once and then at most one line a minute
// with the count, so a dead target cannot flood the log.
func (t *target) sendError(err error) {
	t.unlogged++
	t.lastError = err
	if now := t.clock.Now(); !now.Before(t.nextLog) {
		t.log.Warn("send failed; the datagram was not sent and used no sequence number",
			zap.Error(t.lastError), zap.Uint64("errors", t.unlogged))
		t.unlogged = 0
		t.nextLog = now.Add(errorLogEvery)
	}
}

// goodbye ends the session: its sequence number is the last one sent.
func (t *target) goodbye() {
	if t.seq == 0 {
		return // nothing was sent; there is nothing to settle
	}
	bye := t.bufs[:1]
	for range GoodbyeCopies {
		t.stamp(bye, t.seq-1, wire.FlagGoodbye)
		if _, err := t.out.Write(bye); err != nil {
			t.m.SendErrors.Inc()
			t.sendError(err)
		}
	}
	t.log.Info("session ended with a goodbye", zap.Uint64("last_sequence", t.seq-1))
}

// readReplies takes replies off the socket until it is closed.
func (t *target) readReplies() {
	buf := make([]byte, wire.MaxSize+1)
	oob := make([]byte, socket.OOBSize)
	for {
		n, oobn, _, _, err := t.conn.ReadMsgUDPAddrPort(buf, oob)
		now := t.clock.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors (connection refused) surface here; sends count them
		}
		_, mono := socket.Arrival(socket.Parse(oob[:oobn]), now.UnixNano(), int64(now.Sub(t.epoch)))
		t.handleReply(buf[:n], mono)
	}
}

// handleReply processes one datagram read from the target's socket at mono.
func (t *target) handleReply(b []byte, mono int64) {
	var h wire.Header
	valid := wire.Decode(b, &h) == nil && h.Reply() && h.Session == t.session && string(h.Name) == t.name
	if valid && t.verify != nil {
		_, err := t.verify.Verify(b)
		valid = err == nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !valid:
		t.rt.Reject()
	case h.Goodbye():
		t.rt.Goodbye(h.Received, h.Withheld)
	default:
		if r := t.rt.Reply(h.Seq, h.Received, h.Withheld, mono); r.Outcome == tracker.ReplyAnswered {
			t.m.RTT.Observe(float64(r.RTT) / 1e9)
		}
		if h.Withheld > 0 && !t.warnedWithheld {
			t.warnedWithheld = true
			t.log.Warn("the reflector holds back replies to this sender: it sends faster than the receiver's "+
				"reflect rate limit allows; they count as withheld, not as loss, and their round trips are not "+
				"measured: raise the receiver's reflect rate limit above this sender's rate",
				zap.Float64("rate", t.rate), zap.Uint64("withheld", h.Withheld))
		}
	}
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

// drain waits, after the goodbye, until every datagram's reply and the
// goodbye's reply are in or the loss timeout has passed, then settles the
// session's round trip.
func (t *target) drain(timeout time.Duration) {
	if t.rt == nil || t.seq == 0 {
		return // nothing was sent, nothing will come back
	}
	timer := t.clock.NewTimer()
	for deadline := t.clock.Now().Add(timeout); ; {
		now := t.clock.Now()
		t.mu.Lock()
		t.rt.Expire(int64(now.Sub(t.epoch)))
		done := t.rt.Settled() || !now.Before(deadline)
		if done {
			t.rt.Settle()
		}
		t.mu.Unlock()
		if done {
			return
		}
		timer.Sleep(context.Background(), min(timeout/10, 10*time.Millisecond))
	}
}
