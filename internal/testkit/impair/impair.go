// Package impair is a UDP relay that damages traffic on purpose and writes
// down exactly what it did: the deterministic stand-in for netem in tests.
// It sits between a sender and a receiver on loopback and relays both ways:
// probes up to the receiver, replies from a reflecting receiver back down
// to the sender. For each direction it decides per datagram (from a seeded
// random source or a script) to drop, duplicate, corrupt, hold back behind
// later datagrams, or delay it, and records every datagram it delivered, in
// the order and at the time it delivered it: the ground truth the
// receiver's and the sender's counts are checked against.
//
// Delays are kept precisely enough to test a delay measurement against:
// they run from the kernel's receive timestamp, not from when the reader
// woke, and the last stretch before a delivery is spun rather than slept,
// since a timer can wake a millisecond late on a loaded machine.
//
// Goroutines: Start runs one reader per direction and a timekeeper that
// delivers delayed datagrams. Close stops all three and returns once they
// are done. Datagrams still held or delayed at Close are not delivered and
// not recorded.
package impair

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/testkit/oracle"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// spin is how long before a delayed datagram is due the timekeeper stops
// sleeping and starts polling the clock.
const spin = 2 * time.Millisecond

// Action is what happens to one datagram.
type Action struct {
	Drop    bool
	Copies  int           // extra copies sent right after it
	Corrupt bool          // flip one bit
	Hold    int           // deliver it after this many later datagrams
	Delay   time.Duration // deliver it this long after it arrived
}

// Config chooses a direction's actions from probabilities, unless Script is
// set.
type Config struct {
	Seed                              uint64
	Drop, Duplicate, Corrupt, Reorder float64 // probabilities per datagram
	ReorderDepth                      int     // Hold for reordered datagrams; default 3
	// Delay holds every datagram this long from its arrival: netem's fixed
	// delay. Delayed datagrams are not also held back for reordering.
	Delay time.Duration
	// Script, when set, decides every action. i counts the direction's
	// datagrams from 0; h is nil for datagrams that do not decode.
	Script func(i int, h *wire.Header) Action
}

// DataOnly drops one in dropOneIn of the data datagrams and holds one in
// holdOneIn of the rest behind two later datagrams (0: never), decided by
// a random source seeded with seed; goodbyes and datagrams that do not
// decode pass untouched, so a session's end is always counted.
func DataOnly(seed uint64, dropOneIn, holdOneIn int) Config {
	rng := rand.New(rand.NewPCG(seed, 0))
	one := func(in int) bool { return in > 0 && rng.IntN(in) == 0 }
	return Config{Script: func(_ int, hd *wire.Header) Action {
		switch {
		case hd == nil || hd.Goodbye():
			return Action{}
		case one(dropOneIn):
			return Action{Drop: true}
		case one(holdOneIn):
			return Action{Hold: 2}
		}
		return Action{}
	}}
}

// Delivery is one datagram the relay sent on.
type Delivery struct {
	Session   uint64
	Seq       uint64
	Goodbye   bool
	Corrupted bool
	Valid     bool   // it decoded before any corruption
	SendClock int64  // the sender's send clock, ns
	Flow      uint16 // the sender's flow (wire.Header.Flow)
	Received  uint64
	Arrived   time.Time // when it reached the relay (the kernel's timestamp where there is one)
	At        time.Time // when the relay sent it on
}

// Relay forwards datagrams from its own address to a target, and the
// target's answers back to whoever sent last.
type Relay struct {
	in, out  *net.UDPConn
	up, down *direction
	done     sync.WaitGroup
	wake     chan struct{} // a delayed datagram was queued
	quit     chan struct{}

	mu      sync.Mutex
	client  netip.AddrPort // the sender, where replies go
	delayed queue          // by due time
}

// pending is a delayed datagram waiting for its time.
type pending struct {
	due    time.Time
	dir    *direction
	data   []byte
	d      Delivery
	copies int
}

// queue is a min-heap of delayed datagrams by due time.
type queue []pending

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q queue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)        { *q = append(*q, x.(pending)) }
func (q *queue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type direction struct {
	cfg       Config
	rng       *rand.Rand
	write     func([]byte) error
	delivered []Delivery
	held      []held
}

type held struct {
	after int // index of the datagram after which it goes
	data  []byte
	d     Delivery
}

// New listens on listen (e.g. "127.0.0.1:0") and relays to target, damaging
// what goes up to the target as up says and what comes back as down says.
func New(listen, target string, up, down Config) (*Relay, error) {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	in, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	out, err := net.DialUDP("udp", nil, ta)
	if err != nil {
		in.Close()
		return nil, err
	}
	for _, c := range []*net.UDPConn{in, out} {
		raw, err := c.SyscallConn()
		if err == nil {
			err = socket.EnableTimestamps(raw)
		}
		if err != nil {
			in.Close()
			out.Close()
			return nil, err
		}
	}
	r := &Relay{in: in, out: out, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	r.up = newDirection(up, 0x1de4, func(b []byte) error {
		_, err := out.Write(b)
		return err
	})
	r.down = newDirection(down, 0xd0e5, func(b []byte) error {
		_, err := in.WriteToUDPAddrPort(b, r.client) // r.mu is held
		return err
	})
	return r, nil
}

func newDirection(cfg Config, stream uint64, write func([]byte) error) *direction {
	if cfg.ReorderDepth == 0 {
		cfg.ReorderDepth = 3
	}
	return &direction{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, stream)), write: write}
}

// Addr is where senders should send.
func (r *Relay) Addr() string { return r.in.LocalAddr().String() }

// Start relays in the background until Close.
func (r *Relay) Start() {
	r.done.Go(func() { r.pump(r.up, r.in, true) })
	r.done.Go(func() { r.pump(r.down, r.out, false) })
	r.done.Go(r.timekeeper)
}

// pump relays one direction until its socket is closed. The upstream pump
// remembers who sent, for the downstream one.
func (r *Relay) pump(d *direction, c *net.UDPConn, upstream bool) {
	buf, oob := make([]byte, wire.MaxSize+1), make([]byte, socket.OOBSize)
	for i := 0; ; i++ {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		now := time.Now()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			i-- // an ICMP error from a closed receiver port; nothing was read
			continue
		}
		if waited, ok := socket.Waited(socket.Parse(oob[:oobn]), now.UnixNano()); ok {
			now = now.Add(-waited) // keeps the monotonic reading
		}
		if upstream {
			r.mu.Lock()
			r.client = from
			r.mu.Unlock()
		}
		r.relay(d, i, slices.Clone(buf[:n]), now)
	}
}

// timekeeper delivers delayed datagrams when they are due.
func (r *Relay) timekeeper() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		waiting := len(r.delayed) > 0
		var due time.Time
		if waiting {
			due = r.delayed[0].due
		}
		r.mu.Unlock()
		if !waiting {
			select {
			case <-r.wake:
				continue
			case <-r.quit:
				return
			}
		}
		if sleep := time.Until(due) - spin; sleep > 0 {
			timer.Reset(sleep)
			select {
			case <-timer.C:
			case <-r.wake:
				continue // something may now be due earlier
			case <-r.quit:
				return
			}
		}
		for time.Now().Before(due) {
			runtime.Gosched()
		}
		r.mu.Lock()
		for len(r.delayed) > 0 && !time.Now().Before(r.delayed[0].due) {
			l := heap.Pop(&r.delayed).(pending)
			r.deliver(l.dir, l.data, l.d, l.copies)
		}
		r.mu.Unlock()
	}
}

// Close stops relaying and waits for the readers and the timekeeper.
func (r *Relay) Close() error {
	err := errors.Join(r.in.Close(), r.out.Close())
	close(r.quit)
	r.done.Wait()
	return err
}

// Delivered returns what was delivered up to the target so far, in delivery
// order.
func (r *Relay) Delivered() []Delivery { return r.record(r.up) }

// Returned returns what was delivered back down to the sender so far.
func (r *Relay) Returned() []Delivery { return r.record(r.down) }

func (r *Relay) record(d *direction) []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(d.delivered)
}

func (d *direction) decide(i int, h *wire.Header) Action {
	if d.cfg.Script != nil {
		return d.cfg.Script(i, h)
	}
	var a Action
	a.Drop = d.rng.Float64() < d.cfg.Drop
	if d.rng.Float64() < d.cfg.Duplicate {
		a.Copies = 1
	}
	a.Corrupt = d.rng.Float64() < d.cfg.Corrupt
	if d.rng.Float64() < d.cfg.Reorder {
		a.Hold = d.cfg.ReorderDepth
	}
	a.Delay = d.cfg.Delay
	return a
}

func (r *Relay) relay(dir *direction, i int, data []byte, now time.Time) {
	var h wire.Header
	d := Delivery{Arrived: now}
	if wire.Decode(data, &h) == nil {
		d = Delivery{Session: h.Session, Seq: h.Seq, Goodbye: h.Goodbye(), Valid: true,
			SendClock: h.SendClock, Flow: h.Flow, Received: h.Received, Arrived: now}
	}
	var a Action
	if d.Valid {
		a = dir.decide(i, &h)
	} else {
		a = dir.decide(i, nil)
	}
	if a.Corrupt {
		bit := dir.rng.IntN(len(data) * 8)
		data[bit/8] ^= 1 << (bit % 8)
		d.Corrupted = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case a.Drop:
	case a.Delay > 0:
		heap.Push(&r.delayed, pending{due: now.Add(a.Delay), dir: dir, data: data, d: d, copies: a.Copies})
		select {
		case r.wake <- struct{}{}:
		default:
		}
	case a.Hold > 0:
		dir.held = append(dir.held, held{after: i + a.Hold, data: data, d: d})
	default:
		r.deliver(dir, data, d, a.Copies)
	}
	r.releaseHeld(dir, i)
}

// releaseHeld delivers, in the order they were held, datagrams due after i.
func (r *Relay) releaseHeld(dir *direction, i int) {
	kept := dir.held[:0]
	for _, hd := range dir.held {
		if hd.after <= i {
			r.deliver(dir, hd.data, hd.d, 0)
			continue
		}
		kept = append(kept, hd)
	}
	dir.held = kept
}

// deliver sends data and its copies; r.mu is held.
func (r *Relay) deliver(dir *direction, data []byte, d Delivery, copies int) {
	for range 1 + copies {
		d.At = time.Now()
		if dir.write(data) == nil {
			dir.delivered = append(dir.delivered, d)
		}
	}
}

// Truth is the ground truth for one session from what the relay
// delivered, and the number of deliveries it corrupted (which the receiver
// must count as corrupted, and whose sequence numbers as lost unless another
// copy arrives).
func Truth(delivered []Delivery, session uint64) (w oracle.Want, corrupted uint64) {
	var seqs []uint64
	last := int64(-1)
	for _, d := range delivered {
		switch {
		case d.Corrupted:
			corrupted++
		case !d.Valid || d.Session != session:
		case d.Goodbye:
			last = int64(d.Seq)
		default:
			seqs = append(seqs, d.Seq)
		}
	}
	return oracle.Classify(seqs, last), corrupted
}
