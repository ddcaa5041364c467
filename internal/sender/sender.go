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
// target's round-trip tracker, which the two goroutines share under a mutex.
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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
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
}

// GoodbyeCopies is how many goodbye datagrams end a session, so that the loss
// of one rarely leaves the receiver waiting.
const GoodbyeCopies = 3

// CatchUp is how far behind schedule the sender still sends the slots it is
// late for, back to back; older slots are skipped and counted as missed. It
// absorbs timer wake-up latency without turning a stall into a burst.
const CatchUp = 20 * time.Millisecond

// errorLogEvery limits send-error logging per target.
const errorLogEvery = time.Minute

// MaxBatch is the most datagrams one write sends (sendmmsg on Linux). A
// batch holds only slots already due, so batches form only when the rate
// outruns the timer's wake-ups. Their datagrams share one send time taken
// just before the write: the kernel's time to send the earlier ones of a
// batch (about a microsecond each) adds to a datagram's measured delay,
// which a small batch keeps small.
const MaxBatch = 16

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
	bufs    [][]byte    // MaxBatch datagrams, or fewer for large payloads
	dues    []time.Time // their slots' due times
	start   time.Time   // slot 0 is due at start, slot k at start + k/rate
	rate    float64
	m       metrics.SenderPeer
	log     *zap.Logger
	seq     uint64    // next sequence number
	epoch   time.Time // origin of the send clock and of rt's times
	session uint64
	name    string
	// sign and verify authenticate what is sent and the replies; two,
	// because sending and reading replies run concurrently. nil without keys.
	sign, verify *wire.Auth

	mu       sync.Mutex // guards rt and exported
	rt       *roundTrip // nil without RoundTrip
	exported rtCounts

	unlogged  uint64 // send errors since the last log line
	lastError error
	nextLog   time.Time
}

// New resolves and connects to every target.
func New(opts Options) (*Sender, error) {
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
		dues:    make([]time.Time, 0, batch),
		m:       s.opts.Metrics.Peer(addr),
		log:     s.opts.Logger.With(zap.String("peer", addr)),
		epoch:   time.Now(),
		session: s.session,
		name:    s.opts.Name,
	}
	if s.opts.RoundTrip {
		t.rt = newRoundTrip(s.opts.LossTimeout, s.opts.Rate)
		raw, err := uc.SyscallConn()
		if err == nil {
			err = socket.EnableTimestamps(raw)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("target %s: receive timestamps: %w", addr, err)
		}
	}
	h := wire.Header{Session: s.session, Name: []byte(s.opts.Name)}
	if len(s.opts.Keys) > 0 {
		t.sign, err = wire.NewAuth(s.opts.Keys)
		if err == nil {
			t.verify, err = wire.NewAuth(s.opts.Keys)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("UDPPROBE_HMAC_KEY: %w", err)
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
	t.start, t.rate = time.Now(), rate
	interval := time.Duration(float64(time.Second) / rate)
	catchUp := max(interval, CatchUp)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := int64(0); ; {
		if wait := time.Until(t.due(k)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				t.goodbye()
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			t.goodbye()
			return
		}
		now := time.Now()
		if behind := now.Sub(t.due(k)); behind > catchUp {
			skipped := int64((behind - catchUp) / interval)
			k += skipped
			t.m.MissedSlots.Add(float64(skipped))
		}
		dues := t.dueBy(k, now)
		t.send(dues)
		k += int64(len(dues))
	}
}

// due is when slot k is due.
func (t *target) due(k int64) time.Time {
	return t.start.Add(time.Duration(float64(k) * float64(time.Second) / t.rate))
}

// dueBy returns the due times of slot k, which is due, and of the slots
// after it due by now, up to a batch: none is sent before its time.
func (t *target) dueBy(k int64, now time.Time) []time.Time {
	dues := append(t.dues[:0], t.due(k))
	for len(dues) < cap(t.dues) {
		d := t.due(k + int64(len(dues)))
		if d.After(now) {
			break
		}
		dues = append(dues, d)
	}
	return dues
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
				t.rt.send(t.seq+uint64(i), mono) // before the write, so no reply can beat it
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
				t.rt.unsend(t.seq + uint64(i))
			}
			t.rt.advance(mono)
			t.export()
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
	now = time.Now()
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
	if now := time.Now(); !now.Before(t.nextLog) {
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
		now := time.Now()
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
	if wire.Decode(b, &h) != nil || !h.Reply() || h.Session != t.session || string(h.Name) != t.name {
		t.m.RepliesInvalid.Inc()
		return
	}
	if t.verify != nil {
		if _, err := t.verify.Verify(b); err != nil {
			t.m.RepliesInvalid.Inc()
			return
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if h.Goodbye() {
		t.rt.goodbye(h.Received)
		return
	}
	if rtt, ok := t.rt.reply(h.Seq, h.Received, mono); ok {
		t.m.RTT.Observe(float64(rtt) / 1e9)
	}
	t.export()
}

// export adds what the round-trip tracker counted since the last export to
// the metrics. t.mu is held.
func (t *target) export() {
	c, e := &t.rt.c, &t.exported
	exportDelta(t.m.RepliesReceived, c.Answered, &e.Answered)
	exportDelta(t.m.RepliesLate, c.Late, &e.Late)
	exportDelta(t.m.RepliesDuplicated, c.Duplicated, &e.Duplicated)
	exportDelta(t.m.RepliesInvalid, c.Invalid, &e.Invalid)
	exportDelta(t.m.RoundTripLost, c.Lost, &e.Lost)
	exportDelta(t.m.UpstreamLost, c.Upstream, &e.Upstream)
	exportDelta(t.m.DownstreamLost, c.Downstream, &e.Downstream)
}

func exportDelta(m prometheus.Counter, now uint64, was *uint64) {
	if now != *was {
		m.Add(float64(now - *was))
		*was = now
	}
}

// drain waits, after the goodbye, until every datagram's reply and the
// goodbye's reply are in or the loss timeout has passed, then settles the
// session's round trip.
func (t *target) drain(timeout time.Duration) {
	if t.rt == nil || t.seq == 0 {
		return // nothing was sent, nothing will come back
	}
	tick := time.NewTicker(min(timeout/10, 10*time.Millisecond))
	defer tick.Stop()
	for deadline := time.Now().Add(timeout); ; {
		now := time.Now()
		t.mu.Lock()
		t.rt.advance(int64(now.Sub(t.epoch)))
		done := t.rt.settled() || !now.Before(deadline)
		if done {
			t.rt.finish()
		}
		t.export()
		t.mu.Unlock()
		if done {
			return
		}
		<-tick.C
	}
}
