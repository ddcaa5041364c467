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
package sender

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Sender.
type Options struct {
	Targets     []string // host:port, also the peer label
	Rate        float64  // datagrams per second per target
	PayloadSize int
	Name        string
	Logger      *zap.Logger
	Metrics     *metrics.Sender
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

// Sender sends to every target.
type Sender struct {
	opts    Options
	session uint64
	targets []*target
}

type target struct {
	addr string
	conn net.Conn // connected UDP socket
	buf  []byte
	m    metrics.SenderPeer
	log  *zap.Logger
	seq  uint64 // next sequence number

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
	t := &target{
		addr: addr,
		conn: c,
		buf:  make([]byte, s.opts.PayloadSize),
		m:    s.opts.Metrics.Peer(addr),
		log:  s.opts.Logger.With(zap.String("peer", addr)),
	}
	h := wire.Header{Session: s.session, Name: []byte(s.opts.Name)}
	if err := wire.Encode(t.buf, &h); err != nil {
		c.Close()
		return nil, fmt.Errorf("encode for %s: %w", addr, err)
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

// Run sends until ctx is done, then ends each session with a goodbye and
// closes the sockets.
func (s *Sender) Run(ctx context.Context) error {
	defer s.close()
	interval := time.Duration(float64(time.Second) / s.opts.Rate)
	s.opts.Logger.Info("sending", zap.Strings("targets", s.opts.Targets), zap.String("name", s.opts.Name),
		zap.Float64("rate", s.opts.Rate), zap.Int("payload_size", s.opts.PayloadSize),
		zap.Duration("interval", interval), zap.Uint64("session", s.session))
	var wg sync.WaitGroup
	for _, t := range s.targets {
		wg.Go(func() { t.run(ctx, s.opts.Rate) })
	}
	wg.Wait()
	return nil
}

func (t *target) run(ctx context.Context, rate float64) {
	start := time.Now()
	due := func(k int64) time.Time { return start.Add(time.Duration(float64(k) * float64(time.Second) / rate)) }
	interval := time.Duration(float64(time.Second) / rate)
	catchUp := max(interval, CatchUp)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := int64(0); ; k++ {
		if wait := time.Until(due(k)); wait > 0 {
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
		if behind := time.Since(due(k)); behind > catchUp {
			skipped := int64((behind - catchUp) / interval)
			k += skipped
			t.m.MissedSlots.Add(float64(skipped))
		}
		t.send()
	}
}

// send writes the next data datagram; the sequence number advances only if
// the kernel accepted it.
func (t *target) send() {
	if t.write(t.seq, 0) {
		t.seq++
		t.m.PacketsSent.Inc()
	}
}

func (t *target) write(seq uint64, flags wire.Flags) bool {
	wire.PutFlags(t.buf, flags)
	wire.PutSeq(t.buf, seq)
	wire.PutSendTime(t.buf, time.Now().UnixNano())
	wire.Seal(t.buf)
	if _, err := t.conn.Write(t.buf); err != nil {
		t.m.SendErrors.Inc()
		t.sendError(err)
		return false
	}
	return true
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
	for range GoodbyeCopies {
		t.write(t.seq-1, wire.FlagGoodbye)
	}
	t.log.Info("session ended with a goodbye", zap.Uint64("last_sequence", t.seq-1))
}
