// Package impair is a UDP relay that damages traffic on purpose and writes
// down exactly what it did: the deterministic stand-in for netem in tests.
// It sits between a sender and a receiver on loopback, decides per datagram
// (from a seeded random source or a script) to drop, duplicate, corrupt,
// hold back behind later datagrams, or delay it, and records every datagram
// it delivered in the order it delivered them: the ground truth the
// receiver's counts are checked against.
//
// Goroutines: Start runs one reader; each time-delayed datagram has a timer.
// Close stops the reader, cancels pending timers and returns once both are
// done. Datagrams still held at Close are not delivered and not recorded.
package impair

import (
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/udpprobe/udpprobe/internal/wire"
)

// Action is what happens to one datagram.
type Action struct {
	Drop    bool
	Copies  int           // extra copies sent right after it
	Corrupt bool          // flip one bit
	Hold    int           // deliver it after this many later datagrams
	Delay   time.Duration // deliver it this long after it arrived
}

// Config chooses actions from probabilities, unless Script is set.
type Config struct {
	Seed                              uint64
	Drop, Duplicate, Corrupt, Reorder float64 // probabilities per datagram
	ReorderDepth                      int     // Hold for reordered datagrams; default 3
	// Script, when set, decides every action. i counts datagrams from 0; h is
	// nil for datagrams that do not decode.
	Script func(i int, h *wire.Header) Action
}

// Delivery is one datagram the relay sent on.
type Delivery struct {
	Session   uint64
	Seq       uint64
	Goodbye   bool
	Corrupted bool
	Valid     bool // it decoded before any corruption
}

// Relay forwards datagrams from its own address to a target.
type Relay struct {
	cfg  Config
	rng  *rand.Rand
	in   *net.UDPConn
	out  *net.UDPConn
	done chan struct{}

	mu        sync.Mutex
	closed    bool
	delivered []Delivery
	held      []held
	timers    []*time.Timer // delayed datagrams, stopped at Close
	inFlight  sync.WaitGroup
}

type held struct {
	after int // index of the datagram after which it goes
	data  []byte
	d     Delivery
}

// New listens on listen (e.g. "127.0.0.1:0") and relays to target.
func New(listen, target string, cfg Config) (*Relay, error) {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	in, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		in.Close()
		return nil, err
	}
	out, err := net.DialUDP("udp", nil, ta)
	if err != nil {
		in.Close()
		return nil, err
	}
	if cfg.ReorderDepth == 0 {
		cfg.ReorderDepth = 3
	}
	return &Relay{
		cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x1de4)), in: in, out: out,
		done: make(chan struct{}),
	}, nil
}

// Addr is where senders should send.
func (r *Relay) Addr() string { return r.in.LocalAddr().String() }

// Start relays in the background until Close.
func (r *Relay) Start() {
	go func() {
		defer close(r.done)
		buf := make([]byte, wire.MaxSize+1)
		for i := 0; ; i++ {
			n, err := r.in.Read(buf)
			if err != nil {
				return
			}
			r.relay(i, slices.Clone(buf[:n]))
		}
	}()
}

// Close stops relaying and waits for the reader and any timers.
func (r *Relay) Close() error {
	err := r.in.Close()
	<-r.done
	r.mu.Lock()
	r.closed = true
	for _, t := range r.timers {
		if t.Stop() {
			r.inFlight.Done()
		}
	}
	r.mu.Unlock()
	r.inFlight.Wait()
	return errors.Join(err, r.out.Close())
}

// Delivered returns what was delivered so far, in delivery order.
func (r *Relay) Delivered() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.delivered)
}

func (r *Relay) decide(i int, h *wire.Header) Action {
	if r.cfg.Script != nil {
		return r.cfg.Script(i, h)
	}
	var a Action
	a.Drop = r.rng.Float64() < r.cfg.Drop
	if r.rng.Float64() < r.cfg.Duplicate {
		a.Copies = 1
	}
	a.Corrupt = r.rng.Float64() < r.cfg.Corrupt
	if r.rng.Float64() < r.cfg.Reorder {
		a.Hold = r.cfg.ReorderDepth
	}
	return a
}

func (r *Relay) relay(i int, data []byte) {
	var h wire.Header
	d := Delivery{}
	if wire.Decode(data, &h) == nil {
		d = Delivery{Session: h.Session, Seq: h.Seq, Goodbye: h.Goodbye(), Valid: true}
	}
	var a Action
	if d.Valid {
		a = r.decide(i, &h)
	} else {
		a = r.decide(i, nil)
	}
	if a.Corrupt {
		bit := r.rng.IntN(len(data) * 8)
		data[bit/8] ^= 1 << (bit % 8)
		d.Corrupted = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case a.Drop:
	case a.Delay > 0:
		r.inFlight.Add(1)
		r.timers = append(r.timers, time.AfterFunc(a.Delay, func() {
			defer r.inFlight.Done()
			r.mu.Lock()
			defer r.mu.Unlock()
			if !r.closed {
				r.deliver(data, d, a.Copies)
			}
		}))
	case a.Hold > 0:
		r.held = append(r.held, held{after: i + a.Hold, data: data, d: d})
	default:
		r.deliver(data, d, a.Copies)
	}
	r.releaseHeld(i)
}

// releaseHeld delivers, in the order they were held, datagrams due after i.
func (r *Relay) releaseHeld(i int) {
	kept := r.held[:0]
	for _, hd := range r.held {
		if hd.after <= i {
			r.deliver(hd.data, hd.d, 0)
			continue
		}
		kept = append(kept, hd)
	}
	r.held = kept
}

// deliver sends data and its copies; r.mu is held.
func (r *Relay) deliver(data []byte, d Delivery, copies int) {
	for range 1 + copies {
		if _, err := r.out.Write(data); err == nil {
			r.delivered = append(r.delivered, d)
		}
	}
}
