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
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
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
	"github.com/udpprobe/udpprobe/internal/stamp"
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
	Keys [][]byte
	// STAMPKeys, if any, put STAMP targets in STAMP's authenticated mode
	// (stamp.Auth), the first signing.
	STAMPKeys [][]byte
	Logger    *zap.Logger
	Metrics   *metrics.Sender
	// Session overrides the random session id of every target's first
	// session; zero means random.
	Session uint64
	// Conn, if set, is the socket to send from, shared with a receiver (a
	// mesh node): the sender neither reads nor closes it, and takes its
	// replies through HandleReply. Nil: the sender opens its own. Flows
	// other than 0 have sockets of their own either way, on Conn's
	// address, whose replies the sender reads.
	Conn *net.UDPConn
	// Epoch is the origin of the send clock and of the round trips' times
	// (a mesh node's receiver shares it); zero: when New runs.
	Epoch time.Time
	Clock clock.Clock // nil: clock.Real
	// ClockState, if set, tells what the host knows of its clock: the
	// error estimate of every datagram, read again every second.
	ClockState func() (synchronised bool, maxError time.Duration, err error)
	// TrafficClass is the DSCP (high six bits) and ECN (low two) of every
	// datagram, set on the socket (a shared Conn's too) and said in the
	// datagram, so the receiver can tell what the path changed.
	TrafficClass uint8
	// DontFragment sends every datagram unfragmented (socket.SetDontFragment).
	DontFragment bool
	// Flows is how many sockets, each with its source port for life, every
	// target (but a STAMP one) is probed from, each its own stream at
	// Rate/Flows: ECMP and LAG members hash them apart. 0 or 1: one.
	Flows int
	// OnReply, if set, is told of every reply to a target's datagrams,
	// with what became of it and, for an answered one, its round-trip
	// time: for a caller that keeps them all (udpprobe run). It is called
	// from the reply reader, with the target's lock held, and must be
	// quick.
	OnReply func(target string, seq uint64, outcome tracker.ReplyOutcome, rtt time.Duration)
}

// replyBuffer is the receive buffer the sender asks for when it measures
// round trips.
const replyBuffer = 4 << 20

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
	// extra are the sockets of flows 1, 2, … (Options.Flows).
	extra  []flowSocket
	sign   *wire.Auth // used by Run's goroutine; nil without keys
	verify *wire.Auth // used by the reply reader
	header wire.Header
	// hop4 and hop6 are the IPv4 TTL and IPv6 hop limit the socket sends
	// with, 0 where not known.
	hop4, hop6 uint8

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
	sent    uint64 // data datagrams sent, to every target there has been
	// The error estimate STAMP test packets carry, and when to read the
	// clock's state again.
	estimate  stamp.ErrorEstimate
	nextClock time.Time

	stampReply  stamp.Reflected // the reply path's, one goroutine's
	stampSign   *stamp.Auth     // Run's; nil: unauthenticated
	stampVerify *stamp.Auth     // the reply path's
	pace        socket.Pacer    // the reply reader's; zero: it never holds
}

// flowSocket is a flow's own socket, and what sends on it.
type flowSocket struct {
	conn *net.UDPConn
	out  writer
}

// writerOf is what sends flow f's datagrams.
func (s *Sender) writerOf(f uint16) writer {
	if f == 0 {
		return s.out
	}
	return s.extra[f-1].out
}

// routes finds the target a datagram on the socket is for.
type routes struct {
	byLabel map[string]*target
	byAddr  map[netip.AddrPort]*target
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
		active: map[string]*target{}, known: map[string]bool{},
		estimate:   stamp.Estimate(false, clock.MaxErrorCeiling),
		stampReply: stamp.Reflected{TLVs: make([]stamp.TLV, 0, stamp.MaxTLVs)}}
	if s.epoch.IsZero() {
		s.epoch = opts.Clock.Now()
	}
	if s.session == 0 {
		s.session = randomSession()
	}
	s.routes.Store(&routes{})
	s.header = wire.Header{Name: []byte(opts.Name), TrafficClass: opts.TrafficClass}
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
	if len(opts.STAMPKeys) > 0 {
		var err error
		if s.stampSign, err = stamp.NewAuth(opts.STAMPKeys); err == nil {
			s.stampVerify, err = stamp.NewAuth(opts.STAMPKeys)
		}
		if err != nil {
			return nil, fmt.Errorf("STAMP key: %w", err)
		}
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
	// A shared socket's flows leave from its address, on ports of their own.
	var local *net.UDPAddr
	if s.conn = opts.Conn; s.conn != nil {
		if err = s.mark(s.conn); err != nil {
			return nil, err
		}
		if s.out, err = socket.NewWriter(s.conn, MaxBatch); err != nil {
			return nil, err
		}
		if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok {
			local = &net.UDPAddr{IP: a.IP, Zone: a.Zone}
		}
	} else if s.conn, s.out, err = s.open(nil); err != nil {
		return nil, err
	}
	for range opts.Flows - 1 {
		c, out, err := s.open(local)
		if err != nil {
			s.closeSockets()
			return nil, err
		}
		s.extra = append(s.extra, flowSocket{conn: c, out: out})
	}
	return s, nil
}

// open opens a socket on local's address (nil: for every target and
// family, dual-stack where the host has IPv6) and a port of its own,
// marked as the options say, and what writes on it.
func (s *Sender) open(local *net.UDPAddr) (*net.UDPConn, writer, error) {
	conn, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, nil, err
	}
	out, err := socket.NewWriter(conn, MaxBatch)
	if err == nil {
		err = s.mark(conn)
	}
	if err == nil && s.opts.RoundTrip {
		var raw syscall.RawConn
		if raw, err = conn.SyscallConn(); err == nil {
			err = socket.EnableTimestamps(raw)
		}
		if err == nil {
			// Replies from many targets come in bursts: room for them, as
			// much as the receiver asks for by default.
			var granted int
			if granted, err = socket.SetReceiveBuffer(raw, replyBuffer); err == nil && socket.Timestamps {
				// Their times are the kernel's: the reader may hold
				// between reads, to take many replies a wake-up.
				s.pace = socket.NewPacer(granted)
			}
		}
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, out, nil
}

// extraConns are the sockets of flows 1, 2, ….
func (s *Sender) extraConns() []*net.UDPConn {
	var cs []*net.UDPConn
	for _, f := range s.extra {
		cs = append(cs, f.conn)
	}
	return cs
}

// closeSockets closes the sender's own sockets (not a shared one), ending
// their readers.
func (s *Sender) closeSockets() {
	if s.opts.Conn == nil {
		s.conn.Close()
	}
	for _, f := range s.extra {
		f.conn.Close()
	}
}

// mark sets the traffic class on the socket, and reads the hop limits it
// sends with, for the datagrams to say.
func (s *Sender) mark(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	if err := socket.SetTrafficClass(raw, s.opts.TrafficClass); err != nil {
		return fmt.Errorf("traffic class %#x: %w", s.opts.TrafficClass, err)
	}
	if s.opts.DontFragment {
		if err := socket.SetDontFragment(raw); err != nil {
			return fmt.Errorf("don't fragment: %w", err)
		}
	}
	s.hop4, s.hop6, _ = socket.HopLimits(raw) // 0 where not known: the datagram says so
	return nil
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
	if size := s.size(t); size > wire.MaxSize {
		return fmt.Errorf("target %s: datagrams of %d bytes, over the %d a UDP datagram carries", t.Label, size, wire.MaxSize)
	}
	if t.STAMP {
		return nil // any size from the base up carries a STAMP test packet
	}
	h := s.header
	h.Target = []byte(t.Label)
	if err := wire.Encode(make([]byte, s.size(t)), &h); err != nil {
		return fmt.Errorf("target %s: %w", t.Label, err)
	}
	return nil
}

// size is the size of the datagrams to the target: a STAMP test packet
// is the base of its mode, or the payload size if one is set and leaves
// room for an Extra Padding TLV.
func (s *Sender) size(t discovery.Target) int {
	if t.STAMP {
		base := stamp.BaseSizeOf(s.stampSign)
		if s.opts.PayloadSize >= base+stamp.TLVHeaderSize {
			return s.opts.PayloadSize
		}
		return base
	}
	if s.opts.PayloadSize > 0 {
		return s.opts.PayloadSize
	}
	return wire.MinSize(len(s.opts.Name), len(t.Label)) + int(s.header.TagLen)
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

// Sent is how many data datagrams the sender has sent to all targets;
// read it after Run returns.
func (s *Sender) Sent() uint64 { return s.sent }

// Run sends until ctx is done, then ends each session with a goodbye, waits
// for the last replies if it expects any, and closes the socket.
func (s *Sender) Run(ctx context.Context) error {
	// Each flow's source port, for finding the ECMP or LAG member a flow
	// hashes onto.
	var ports []int
	for _, c := range append([]*net.UDPConn{s.conn}, s.extraConns()...) {
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
			ports = append(ports, a.Port)
		}
	}
	s.opts.Logger.Info("sending", zap.String("name", s.opts.Name),
		zap.Float64("rate", s.opts.Rate), zap.Int("payload_size", s.opts.PayloadSize), // 0: the smallest per target
		zap.Duration("interval", time.Duration(float64(time.Second)/s.opts.Rate)),
		zap.Uint64("session", s.session), zap.Bool("round_trip", s.opts.RoundTrip), zap.Ints("flow_ports", ports))
	var reader sync.WaitGroup
	if s.opts.RoundTrip {
		conns := s.extraConns() // a shared socket's replies come through HandleReply
		if s.opts.Conn == nil {
			conns = append(conns, s.conn)
		}
		var ins []*socket.Reader
		for _, c := range conns {
			in, err := socket.NewReader(c, MaxBatch, wire.MaxSize+1)
			if err != nil {
				s.closeSockets()
				return err
			}
			ins = append(ins, in)
		}
		for _, in := range ins {
			reader.Go(func() { s.readReplies(in, s.pace) })
		}
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
		s.readClock(now)
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
		for _, f := range t.all() {
			s.goodbye(f)
		}
		ending = append(ending, t)
	}
	s.drain(ending)
	s.closeSockets() // ends the readers
	reader.Wait()
	// One line for the whole run: the goodbyes' lines, one per target, may
	// be sampled away when there are many.
	s.opts.Logger.Info("sending stopped", zap.Uint64("sent", s.sent), zap.Int("targets", len(s.known)))
	return nil
}

// readClock reads the clock's state, for STAMP's error estimate, once a
// second.
func (s *Sender) readClock(now time.Time) {
	if s.opts.ClockState == nil || now.Before(s.nextClock) {
		return
	}
	s.nextClock = now.Add(time.Second)
	if synced, maxErr, err := s.opts.ClockState(); err == nil {
		s.estimate = stamp.Estimate(synced, maxErr)
	}
}

// readLag is how long after a reply arrived the reader may read it (ns):
// a round trip is decided that long after its waiting time, so that a
// reply in time is never judged lost while the reader holds.
func (s *Sender) readLag() int64 { return int64(s.pace.Longest()) }

// readReplies takes replies off the socket until it is closed. After a
// read that emptied the socket it holds as the pacer says (the kernel's
// timestamps keep the replies' times), so that a wake-up takes many: the
// wake-ups, not the replies, are most of what a reply costs.
func (s *Sender) readReplies(in *socket.Reader, pace socket.Pacer) {
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		msgs, err := in.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := s.clock.Now()
		stamped := true
		for _, m := range msgs {
			stamped = stamped && m.Control.HasTime
			pace.Queue(len(m.Buf))
			_, mono := socket.Arrival(m.Control, now.UnixNano(), int64(now.Sub(s.epoch)))
			s.HandleReply(m.Buf, m.From, mono)
		}
		if pace.Holds() && len(msgs) < MaxBatch && stamped {
			hold.Reset(pace.Next())
			<-hold.C
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
			f := t.flowOf(h.Flow)
			if f == nil { // no such flow: a reply to nothing sent
				t.reject()
				return
			}
			t = f
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
		if t.stamp {
			if stamp.DecodeReflected(b, &s.stampReply, s.stampVerify) == nil {
				t.handleSTAMP(&s.stampReply, mono)
				return
			}
		}
		t.reject()
		return
	}
	s.opts.Metrics.Foreign.Inc()
}
