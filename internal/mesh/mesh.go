// Package mesh makes a node of a mesh: from the members discovery finds,
// it picks the neighbours the node probes (all of them, or k on a hash
// ring), learns each neighbour's own name by a hello (a datagram the
// neighbour answers with its name, docs/protocol.md), and hands the sender
// the neighbours it can name, labelled by their names, so that a pair's
// series carry the same two names on both nodes.
//
// Goroutines: Run, which owns the members, the neighbours and the hellos
// in flight. SetMembers is called by discovery's goroutine and HelloReply
// by the receiver's; both only record what they are given and wake Run.
package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Mesh.
type Options struct {
	Name string // the node's own name
	// Self reports whether a member is this node (its own address); its
	// label then places the node on the ring.
	Self func(netip.AddrPort) bool
	// Neighbours is how many members the node probes, the ones that follow
	// it on the ring; 0: all.
	Neighbours int
	// HelloEvery is how often a neighbour not yet named is asked again;
	// Recheck how often a named one is, to notice another node taking its
	// address.
	HelloEvery, Recheck time.Duration
	// Send writes a hello to an address, on the node's socket.
	Send func(b []byte, to netip.AddrPort) error
	// Targets takes the neighbours to probe, labelled by their names (the
	// sender's SetTargets).
	Targets func([]discovery.Target)
	Keys    [][]byte // sign the hellos, if set
	Logger  *zap.Logger
	Clock   clock.Clock // nil: clock.Real
}

// Mesh is one node's view of the mesh.
type Mesh struct {
	opts Options
	sign *wire.Auth

	mu      sync.Mutex
	members []discovery.Target
	changed bool
	asked   map[netip.AddrPort]uint64 // hello session by address, for the replies
	learned map[netip.AddrPort]string // names by address
	wake    chan struct{}

	// Run's own.
	lastHello map[netip.AddrPort]time.Time
	targets   []discovery.Target
	buf       []byte
	// shared is, by name, the addresses last seen answering it together,
	// so that it is said once.
	shared map[string]string
	mixed  bool        // the members are of both families, as said
	settle *time.Timer // wakes Run when the answers it waits for are due
}

// New returns a mesh node with no members yet.
func New(opts Options) (*Mesh, error) {
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	m := &Mesh{opts: opts, asked: map[netip.AddrPort]uint64{}, learned: map[netip.AddrPort]string{},
		wake: make(chan struct{}, 1), lastHello: map[netip.AddrPort]time.Time{}, shared: map[string]string{}}
	if len(opts.Keys) > 0 {
		var err error
		if m.sign, err = wire.NewAuth(opts.Keys); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// SetMembers replaces the members, as discovery finds them, this node
// among them or not.
func (m *Mesh) SetMembers(ts []discovery.Target) {
	m.mu.Lock()
	m.members, m.changed = ts, true
	m.mu.Unlock()
	m.poke()
}

func (m *Mesh) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// HelloReply takes the reply to a hello, h, that came from an address: if
// it answers the hello last sent there, the name it carries is that
// address's. It does not block.
func (m *Mesh) HelloReply(h *wire.Header, from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if !wire.ValidName(h.Target) || string(h.Name) != m.opts.Name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if session, ok := m.asked[from]; !ok || session != h.Session {
		return // not asked, or a stale answer
	}
	delete(m.asked, from)
	if m.learned[from] != string(h.Target) {
		m.learned[from] = string(h.Target)
		m.changed = true
		m.poke()
	}
}

// Run keeps the sender's targets the named neighbours until ctx is done.
func (m *Mesh) Run(ctx context.Context) error {
	tick := time.NewTicker(m.opts.HelloEvery)
	defer tick.Stop()
	defer func() {
		if m.settle != nil {
			m.settle.Stop()
		}
	}()
	for {
		m.refresh(m.opts.Clock.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-tick.C:
		}
	}
}

// refresh picks the neighbours, says hello to those it cannot name (again
// after HelloEvery) and to those it named a Recheck ago, and hands the
// named ones to the sender when they change.
func (m *Mesh) refresh(now time.Time) {
	m.mu.Lock()
	members := m.members
	m.changed = false
	self := m.opts.Name
	for _, t := range members {
		if m.opts.Self != nil && m.opts.Self(t.Addr) {
			self = t.Label
		}
	}
	var others []discovery.Target
	for _, t := range members {
		if t.Label == self || m.learned[t.Addr] == m.opts.Name {
			continue // this node, by address or by the name it answered with
		}
		others = append(others, t)
	}
	m.mixedFamilies(others)
	neighbours := Neighbours(others, self, m.opts.Neighbours)
	var hello []discovery.Target
	byName := map[string][]netip.AddrPort{}
	for _, n := range neighbours {
		name, named := m.learned[n.Addr]
		last, asked := m.lastHello[n.Addr]
		switch {
		case !named && (!asked || now.Sub(last) >= m.opts.HelloEvery),
			named && now.Sub(last) >= m.opts.Recheck:
			hello = append(hello, n)
		}
		if named {
			byName[name] = append(byName[name], n.Addr)
		}
	}
	targets := make([]discovery.Target, 0, len(byName))
	for name, addrs := range byName {
		slices.SortFunc(addrs, preferred)
		targets = append(targets, discovery.Target{Label: name, Addr: addrs[0]})
		m.sharedName(name, addrs)
	}
	for name := range m.shared {
		if len(byName[name]) < 2 {
			delete(m.shared, name)
		}
	}
	// Forget what no member needs any more.
	keep := map[netip.AddrPort]bool{}
	for _, t := range members {
		keep[t.Addr] = true
	}
	for a := range m.learned {
		if !keep[a] {
			delete(m.learned, a)
		}
	}
	for a := range m.asked {
		if !keep[a] {
			delete(m.asked, a)
		}
	}
	for a := range m.lastHello {
		if !keep[a] {
			delete(m.lastHello, a)
		}
	}
	sessions := make([]uint64, len(hello))
	for i, n := range hello {
		sessions[i] = randomSession()
		m.asked[n.Addr] = sessions[i]
		m.lastHello[n.Addr] = now
	}
	m.mu.Unlock()

	for i, n := range hello {
		m.hello(n, sessions[i], now)
	}
	slices.SortFunc(targets, func(a, b discovery.Target) int { return strings.Compare(a.Label, b.Label) })
	if slices.Equal(targets, m.targets) {
		return
	}
	if until := m.answersDue(now); !until.IsZero() {
		// The answers of members asked with the ones named may name the
		// same nodes (a dual-stack node answers from both its addresses):
		// wait for them, so that the address probed does not change when
		// the second comes.
		if m.settle == nil {
			m.settle = time.AfterFunc(until.Sub(now), m.poke)
		} else {
			m.settle.Reset(until.Sub(now))
		}
		return
	}
	m.targets = targets
	m.opts.Targets(targets)
}

// answersDue is when the answers to the hellos sent to members not yet
// named in the last settle time are due, or zero if there are none: a
// member that answers takes less than a round trip; one that never does
// holds the targets back a settle time after each hello, no more.
func (m *Mesh) answersDue(now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var until time.Time
	for a := range m.asked {
		if _, named := m.learned[a]; !named {
			if due := m.lastHello[a].Add(m.opts.HelloEvery / settleShare); due.After(now) && due.After(until) {
				until = due
			}
		}
	}
	return until
}

// settleShare is how much of HelloEvery a node waits for the answers to
// the hellos it sent before it hands the sender new targets: a quarter of
// a second with the daemons' HelloEvery of a second, many round trips.
const settleShare = 4

// preferred orders the addresses answering one name, the one to probe
// first: IPv6 before IPv4 (a dual-stack node, found under both; RFC 6724's
// default order), then the lowest.
func preferred(a, b netip.AddrPort) int {
	if a6, b6 := a.Addr().Is6(), b.Addr().Is6(); a6 != b6 {
		if a6 {
			return -1
		}
		return 1
	}
	return a.Compare(b)
}

// sharedName says, once for each set, that several addresses answer one
// name and which is probed: at debug level for one address of each family
// (a dual-stack node), as a warning otherwise (two nodes, one name).
func (m *Mesh) sharedName(name string, addrs []netip.AddrPort) {
	if len(addrs) < 2 {
		return
	}
	var all []string
	v4 := 0
	for _, a := range addrs {
		all = append(all, a.String())
		if a.Addr().Is4() {
			v4++
		}
	}
	key := strings.Join(all, ",")
	if m.shared[name] == key {
		return
	}
	m.shared[name] = key
	log := m.opts.Logger.Warn
	msg := "several neighbours answer with one name; one of them is probed"
	if len(addrs) == 2 && v4 == 1 {
		log, msg = m.opts.Logger.Debug, "a dual-stack neighbour: probed over IPv6 (unless the IP family probed is set)"
	}
	log(msg, zap.String("name", name), zap.Strings("addresses", all), zap.Stringer("probed", addrs[0]))
}

// mixedFamilies warns, once each time it becomes so, that a hash ring has
// members of both families: a dual-stack node is then two members, so the
// ring no longer gives every node k probers.
func (m *Mesh) mixedFamilies(others []discovery.Target) {
	var v4, v6 bool
	for _, t := range others {
		v4, v6 = v4 || t.Addr.Addr().Is4(), v6 || t.Addr.Addr().Is6()
	}
	mixed := v4 && v6 && m.opts.Neighbours > 0
	if mixed && !m.mixed {
		m.opts.Logger.Warn("the members have IPv4 and IPv6 addresses: a dual-stack node takes two places on the ring, "+
			"so nodes are probed by more or fewer than the neighbours each probes; set the IP family probed to ipv4 or ipv6",
			zap.Int("neighbours", m.opts.Neighbours))
	}
	m.mixed = mixed
}

// hello asks the node at n's address for its name.
func (m *Mesh) hello(n discovery.Target, session uint64, now time.Time) {
	h := wire.Header{Flags: wire.FlagHello, Name: []byte(m.opts.Name), Target: []byte(n.Label), Session: session,
		SendTime: now.UnixNano()}
	if m.sign != nil {
		h.TagLen = wire.TagSize
	}
	size := wire.HelloSize(len(h.Name), len(h.Target), int(h.TagLen))
	if cap(m.buf) < size {
		m.buf = make([]byte, size)
	}
	b := m.buf[:size]
	if err := wire.Encode(b, &h); err != nil {
		m.opts.Logger.Warn("cannot say hello to a member: its label cannot be sent", zap.String("member", n.Label), zap.Error(err))
		return
	}
	if m.sign != nil {
		m.sign.Sign(b, 0)
	}
	if err := m.opts.Send(b, n.Addr); err != nil {
		m.opts.Logger.Debug("hello not sent", zap.String("member", n.Label), zap.Error(err))
	}
}

func randomSession() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return binary.BigEndian.Uint64(b[:]) | 1
}
