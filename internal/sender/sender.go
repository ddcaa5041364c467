// Package sender runs the sending side of udpprobe: to each target, at a
// fixed rate, a datagram with the next sequence number.
//
// Goroutines: Run is the one that sends, to every target, from one UDP
// socket: a queue orders the targets by their next slot, and the datagrams
// due together leave in one write (sendmmsg on Linux), whatever their
// destinations. There is no goroutine or timer per target. With RoundTrip,
// a second goroutine reads the replies off the socket and feeds each
// target's round-trip tracker (tracker.RoundTrip), which it shares with Run
// and the metrics' scrapes under the target's mutex. SetTargets may be
// called from any goroutine; Run applies it.
//
// Sequence numbers count datagrams the kernel accepted: a send error does
// not consume one, so the receiver never mistakes a local failure for
// network loss. Each target's schedule is drift-free: its slot k is due at
// start + phase + k/rate, the phase spreading targets over the interval.
// Slots a late wake-up delays by up to CatchUp (or one interval, if longer)
// are sent at once; a sender stalled for longer skips the older slots and
// counts them as missed instead of bursting to catch up.
//
// A target that goes away (SetTargets) ends its session with goodbyes; its
// series are deleted once its last replies are in or the loss timeout has
// passed. On shutdown the sender says goodbye to every target and waits up
// to the loss timeout for the last replies, so a finite run is counted to
// its end.
package sender

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Sender.
type Options struct {
	// Targets are host:port entries, resolved once by New; SetTargets
	// replaces them while the sender runs.
	Targets []string
	Rate    float64 // datagrams per second per target
	// PayloadSize is every datagram's size; 0: for each target, the
	// smallest that carries the name and the target's label.
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
	// Session overrides the random session id of every target's first
	// session; zero means random.
	Session uint64
	// Conn, if set, is the socket to send from, shared with a receiver (a
	// mesh node): the sender neither reads nor closes it, and takes its
	// replies through HandleReply. Nil: the sender opens its own.
	Conn *net.UDPConn
	// Epoch is the origin of the send clock and of the round trips' times
	// (a mesh node's receiver shares it); zero: when New runs.
	Epoch time.Time
	Clock clock.Clock // nil: clock.Real
}

// GoodbyeCopies is how many goodbye datagrams end a session, so that the loss
// of one rarely leaves the receiver waiting.
const GoodbyeCopies = 3

// errorLogEvery limits send-error logging per target.
const errorLogEvery = time.Minute

// MaxBatch is the most datagrams one write sends (sendmmsg on Linux). A
// batch holds only slots already due, so batches form only when the rates
// outrun the timer's wake-ups. Their datagrams share one send time taken
// just before the write: the kernel's time to send the earlier ones of a
// batch (about a microsecond each) adds to a datagram's measured delay,
// which a small batch keeps small.
const MaxBatch = 16

// MaxRate is the highest rate a schedule can keep: one datagram a nanosecond.
const MaxRate = 1e9

// batchBytes bounds a target's datagram buffers for large payloads.
const batchBytes = 256 << 10

// maxIdle is the longest the loop sleeps: target changes and the last
// replies of targets that left are looked at least this often.
const maxIdle = 100 * time.Millisecond

// writer sends a batch of datagrams, each to its destination: a
// socket.Writer, or a fake in tests. It returns how many the kernel
// accepted and, if not all, why the next one was refused.
type writer interface {
	Write(bufs [][]byte, to []netip.AddrPort) (int, error)
}

// Sender sends to every target from one socket.
type Sender struct {
	opts    Options
	session uint64
	clock   clock.Clock
	epoch   time.Time // origin of the send clock and of the round trips' times
	conn    *net.UDPConn
	out     writer
	sign    *wire.Auth // used by Run's goroutine; nil without keys
	verify  *wire.Auth // used by the reply reader
	header  wire.Header

	// routes is what the reply reader looks targets up in; Run replaces
	// it whenever the targets change.
	routes atomic.Pointer[routes]

	mu      sync.Mutex // guards next
	next    []discovery.Target
	changed atomic.Bool // next is waiting for Run

	// Run's own.
	active  map[string]*target // by label
	queue   queue
	leaving []*target
	known   map[string]bool // labels that have had a session
	batch   batch
}

// routes finds the target a datagram on the socket is for.
type routes struct {
	byLabel map[string]*target
	byAddr  map[netip.AddrPort]*target
}

// batch is the datagrams of one write, and for each its target and slot.
type batch struct {
	bufs [][]byte
	to   []netip.AddrPort
	of   []*target
	seqs []uint64
	dues []time.Time
}

func (b *batch) reset() {
	b.bufs, b.to, b.of, b.seqs, b.dues = b.bufs[:0], b.to[:0], b.of[:0], b.seqs[:0], b.dues[:0]
}

// drop removes the first n datagrams.
func (b *batch) drop(n int) {
	b.bufs, b.to, b.of, b.seqs, b.dues = b.bufs[n:], b.to[n:], b.of[n:], b.seqs[n:], b.dues[n:]
}

// New opens the socket and resolves opts.Targets.
func New(opts Options) (*Sender, error) {
	if !(opts.Rate > 0 && opts.Rate <= MaxRate) {
		// The schedule divides by the interval, which must be a nanosecond at least.
		return nil, fmt.Errorf("rate %v: want more than 0 and at most %v datagrams per second", opts.Rate, MaxRate)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	s := &Sender{opts: opts, session: opts.Session, clock: opts.Clock, epoch: opts.Epoch,
		active: map[string]*target{}, known: map[string]bool{}}
	if s.epoch.IsZero() {
		s.epoch = opts.Clock.Now()
	}
	if s.session == 0 {
		s.session = randomSession()
	}
	s.routes.Store(&routes{})
	s.header = wire.Header{Name: []byte(opts.Name)}
	if len(opts.Keys) > 0 {
		var err error
		if s.sign, err = wire.NewAuth(opts.Keys); err == nil {
			s.verify, err = wire.NewAuth(opts.Keys)
		}
		if err != nil {
			return nil, fmt.Errorf("authentication key: %w", err)
		}
		s.header.TagLen = wire.TagSize
	}
	d, err := discovery.New(discovery.Options{Entries: opts.Targets})
	if err != nil {
		return nil, err
	}
	ts, err := d.Resolve(context.Background(), opts.Clock.Now())
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if err := s.check(t); err != nil {
			return nil, err
		}
	}
	s.SetTargets(ts)
	if s.conn = opts.Conn; s.conn != nil {
		if s.out, err = socket.NewWriter(s.conn, MaxBatch); err != nil {
			return nil, err
		}
		return s, nil
	}
	// One socket for every target and family: dual-stack where the host
	// has IPv6.
	if s.conn, err = net.ListenUDP("udp", nil); err != nil {
		return nil, err
	}
	out, err := socket.NewWriter(s.conn, MaxBatch)
	if err == nil && opts.RoundTrip {
		var raw syscall.RawConn
		if raw, err = s.conn.SyscallConn(); err == nil {
			err = socket.EnableTimestamps(raw)
		}
	}
	if err != nil {
		s.conn.Close()
		return nil, err
	}
	s.out = out
	return s, nil
}

func randomSession() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return binary.BigEndian.Uint64(b[:]) | 1 // never zero
}

// check reports whether a datagram can name the target and fit.
func (s *Sender) check(t discovery.Target) error {
	h := s.header
	h.Target = []byte(t.Label)
	if err := wire.Encode(make([]byte, s.size(t.Label)), &h); err != nil {
		return fmt.Errorf("target %s: %w", t.Label, err)
	}
	return nil
}

// size is the size of the datagrams to the target labelled label.
func (s *Sender) size(label string) int {
	if s.opts.PayloadSize > 0 {
		return s.opts.PayloadSize
	}
	return wire.MinSize(len(s.opts.Name), len(label)) + int(s.header.TagLen)
}

// SetTargets replaces the targets, from any goroutine: Run starts a session
// with each new one within maxIdle, and ends the session of each one gone.
// A target whose address changed is a new one under the same label.
func (s *Sender) SetTargets(ts []discovery.Target) {
	s.mu.Lock()
	s.next = ts
	s.mu.Unlock()
	s.changed.Store(true)
}

// Session is the session id of every target's first session.
func (s *Sender) Session() uint64 { return s.session }

// Run sends until ctx is done, then ends each session with a goodbye, waits
// for the last replies if it expects any, and closes the socket.
func (s *Sender) Run(ctx context.Context) error {
	s.opts.Logger.Info("sending", zap.String("name", s.opts.Name),
		zap.Float64("rate", s.opts.Rate), zap.Int("payload_size", s.opts.PayloadSize), // 0: the smallest per target
		zap.Duration("interval", time.Duration(float64(time.Second)/s.opts.Rate)),
		zap.Uint64("session", s.session), zap.Bool("round_trip", s.opts.RoundTrip))
	var reader sync.WaitGroup
	if s.opts.RoundTrip && s.opts.Conn == nil {
		in, err := socket.NewReader(s.conn, MaxBatch, wire.MaxSize+1)
		if err != nil {
			s.conn.Close()
			return err
		}
		reader.Go(func() { s.readReplies(in) })
	}
	timer := s.clock.NewTimer()
	for {
		now := s.clock.Now()
		if s.changed.Swap(false) {
			s.mu.Lock()
			next := s.next
			s.mu.Unlock()
			s.apply(next, now)
		}
		s.release(now)
		wait := maxIdle
		if len(s.queue) > 0 {
			wait = min(wait, time.Duration(s.queue[0].at-int64(now.Sub(s.epoch))))
		}
		if wait > 0 {
			if !timer.Sleep(ctx, wait) {
				break
			}
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.sendDue(now)
	}
	ending := s.leaving
	for _, t := range s.active {
		s.goodbye(t)
		ending = append(ending, t)
	}
	s.drain(ending)
	if s.opts.Conn == nil {
		s.conn.Close() // ends the reader
	}
	reader.Wait()
	return nil
}

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
			old.settled(int64(now.Sub(s.epoch)), true)
			s.leaving = append(s.leaving[:i], s.leaving[i+1:]...)
			break
		}
	}
	session := s.session
	if s.known[w.Label] {
		session = randomSession() // a session number once ended is never reused
	}
	s.known[w.Label] = true
	size := s.size(w.Label)
	slots := min(MaxBatch, max(1, batchBytes/size), int(math.Ceil(s.opts.Rate*max(CatchUp.Seconds(), 1/s.opts.Rate))))
	t := &target{label: w.Label, session: session, index: -1,
		log: s.opts.Logger.With(zap.String("target", w.Label))}
	h := s.header
	h.Target, h.Session = []byte(w.Label), session
	for range slots {
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
	t.m = s.opts.Metrics.Target(w.Label, t.roundTrip)
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
	t.leaveBy = now.Add(s.opts.LossTimeout)
	s.leaving = append(s.leaving, t)
}

// release forgets the targets that left once their replies are in.
func (s *Sender) release(now time.Time) {
	if len(s.leaving) == 0 {
		return
	}
	mono := int64(now.Sub(s.epoch))
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

// sendDue sends the slots due at now, of every target, in batches.
func (s *Sender) sendDue(now time.Time) {
	b := &s.batch
	b.reset()
	for len(s.queue) > 0 {
		t := s.queue[0]
		if t.at > int64(now.Sub(s.epoch)) {
			break
		}
		room := MaxBatch - len(b.bufs)
		if room == 0 || t.pending > 0 {
			// Full, or the target is in it already with all its buffers.
			s.flush()
			now = s.clock.Now()
			continue
		}
		dues, skipped := t.sched.take(now, room)
		if skipped > 0 {
			t.m.MissedSlots.Add(float64(skipped))
		}
		for i, d := range dues {
			b.bufs = append(b.bufs, t.bufs[i])
			b.to = append(b.to, t.to)
			b.of = append(b.of, t)
			b.dues = append(b.dues, d)
		}
		t.pending = len(dues)
		t.due(s.epoch)
		heap.Fix(&s.queue, 0)
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
		sent, err := s.out.Write(b.bufs, b.to)
		tried := min(len(b.bufs), sent+1)
		if err == nil {
			tried = sent
		}
		for i := range tried {
			b.of[i].m.ScheduleLateness.Observe(max(0, now.Sub(b.dues[i]).Seconds()))
		}
		for i := range sent {
			t := b.of[i]
			t.seq++
			t.m.PacketsSent.Inc()
		}
		s.untrack(b, sent, mono)
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
		wire.PutFlags(buf, 0)
		wire.PutSeq(buf, seq)
	}
	now = s.clock.Now()
	mono = int64(now.Sub(s.epoch))
	for _, buf := range b.bufs {
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
// expires what is due.
func (s *Sender) untrack(b *batch, sent int, mono int64) {
	for i := len(b.of) - 1; i >= 0; i-- {
		t := b.of[i]
		if t.rt == nil {
			continue
		}
		t.mu.Lock()
		if i >= sent {
			t.rt.Unsend(b.seqs[i])
		}
		if i == 0 || b.of[i-1] != t {
			t.rt.Expire(mono) // once per target: its datagrams are adjacent
		}
		t.mu.Unlock()
	}
}

// goodbye ends a target's session: its sequence number is the last one
// sent.
func (s *Sender) goodbye(t *target) {
	if t.seq == 0 {
		return // nothing was sent; there is nothing to settle
	}
	bye, to := t.bufs[:1], []netip.AddrPort{t.to}
	for range GoodbyeCopies {
		wire.PutFlags(bye[0], wire.FlagGoodbye)
		wire.PutSeq(bye[0], t.seq-1)
		now := s.clock.Now()
		s.seal(bye[0], now, int64(now.Sub(s.epoch)))
		if _, err := s.out.Write(bye, to); err != nil {
			t.sendError(err, now)
		}
	}
	t.log.Info("session ended with a goodbye", zap.Uint64("last_sequence", t.seq-1))
}

// readReplies takes replies off the socket until it is closed.
func (s *Sender) readReplies(in *socket.Reader) {
	for {
		msgs, err := in.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := s.clock.Now()
		for _, m := range msgs {
			_, mono := socket.Arrival(m.Control, now.UnixNano(), int64(now.Sub(s.epoch)))
			s.HandleReply(m.Buf, m.From, mono)
		}
	}
}

// HandleReply takes one datagram read from the socket at mono (ns since
// the epoch): a reply finds its target by the label it carries, anything
// else by the address it came from. The sender's own reader calls it; a
// mesh node's receiver does, for the socket they share.
func (s *Sender) HandleReply(b []byte, from netip.AddrPort, mono int64) {
	r := s.routes.Load()
	var h wire.Header
	if wire.Decode(b, &h) == nil {
		if t := r.byLabel[string(h.Target)]; t != nil && t.rt != nil {
			valid := h.Reply() && h.Session == t.session && string(h.Name) == s.opts.Name
			if valid && s.verify != nil {
				_, err := s.verify.Verify(b)
				valid = err == nil
			}
			t.handleReply(&h, valid, mono)
			return
		}
	}
	if t := r.byAddr[netip.AddrPortFrom(from.Addr().Unmap(), from.Port())]; t != nil && t.rt != nil {
		t.reject()
		return
	}
	s.opts.Metrics.Foreign.Inc()
}
