package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/testkit/fakeclock"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// net is a fake network of mesh nodes: a hello sent to an address is
// answered at once by the node there, if it has a name, as a reflector
// would (wire.MakeHelloReply), and the reply handed to the sender's mesh.
type net struct {
	names map[netip.AddrPort]string // the node at each address
	sent  int
	log   *zap.Logger // the nodes'; nil: none
	// slow are addresses whose answers wait in held until deliver.
	slow map[netip.AddrPort]bool
	held []func()
	// published is every target set the node handed the sender.
	published [][]string
}

// deliver hands the mesh the answers held back.
func (n *net) deliver() {
	for _, f := range n.held {
		f()
	}
	n.held = nil
}

func (n *net) node(t *testing.T, name string, self netip.AddrPort, k int) (*Mesh, *[]discovery.Target) {
	t.Helper()
	var got []discovery.Target
	var m *Mesh
	n.published = nil
	var err error
	log := n.log
	if log == nil {
		log = zap.NewNop()
	}
	m, err = New(Options{Name: name, Self: func(a netip.AddrPort) bool { return a == self }, Neighbours: k,
		HelloEvery: time.Second, Recheck: time.Minute, Logger: log, Clock: fakeclock.New(time.Unix(0, 0)),
		Targets: func(ts []discovery.Target) { got = ts; n.published = append(n.published, labels(ts)) },
		Send: func(b []byte, to netip.AddrPort) error {
			n.sent++
			answerer, ok := n.names[to]
			if !ok {
				return nil // nobody there
			}
			reply := append([]byte(nil), b...)
			if !wire.MakeHelloReply(reply, []byte(answerer)) {
				t.Fatalf("a hello too short for %q", answerer)
			}
			var h wire.Header
			if err := wire.Decode(reply, &h); err != nil {
				t.Fatal(err)
			}
			if n.slow[to] {
				n.held = append(n.held, func() { m.HelloReply(&h, to) })
				return nil
			}
			m.HelloReply(&h, to)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return m, &got
}

func labels(ts []discovery.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Label+"@"+t.Addr.String())
	}
	return out
}

// TestNamesByHello: a node names each neighbour by the name it answers a
// hello with, and probes it under that name; itself (by address, or by the
// name an unnoticed address of its own answers with) never; a member that
// does not answer not until it does; a member whose address another node
// takes is probed under the new name after the recheck; a member that
// leaves is dropped.
func TestNamesByHello(t *testing.T) {
	ms := members(4)
	n := &net{names: map[netip.AddrPort]string{ms[0].Addr: "node-0", ms[1].Addr: "node-1", ms[2].Addr: "node-2"}}
	m, got := n.node(t, "node-0", ms[0].Addr, 0)
	extra := netip.MustParseAddrPort("10.9.9.9:6464") // this node too, by another address
	n.names[extra] = "node-0"
	m.SetMembers(append(ms, discovery.Target{Label: extra.String(), Addr: extra}))
	now := time.Unix(100, 0)
	m.refresh(now)                      // hellos go out, and are answered at once, but for the silent member's
	m.refresh(now.Add(time.Second / 4)) // the answers are in, and the silent member's no longer due
	want := []string{"node-1@" + ms[1].Addr.String(), "node-2@" + ms[2].Addr.String()}
	if g := labels(*got); !slices.Equal(g, want) {
		t.Fatalf("targets %q, want %q", g, want)
	}
	sent := n.sent
	m.refresh(now.Add(500 * time.Millisecond))
	if n.sent != sent {
		t.Fatalf("%d hellos before HelloEvery passed", n.sent-sent)
	}
	n.names[ms[3].Addr] = "node-3" // it answers now
	m.refresh(now.Add(time.Second))
	m.refresh(now.Add(time.Second))
	want = append(want, "node-3@"+ms[3].Addr.String())
	if g := labels(*got); !slices.Equal(g, want) {
		t.Fatalf("once the silent member answers: targets %q, want %q", g, want)
	}
	n.names[ms[1].Addr] = "node-9" // another node took the address
	m.refresh(now.Add(time.Minute + time.Second))
	m.refresh(now.Add(time.Minute + time.Second))
	want = []string{"node-2@" + ms[2].Addr.String(), "node-3@" + ms[3].Addr.String(), "node-9@" + ms[1].Addr.String()}
	if g := labels(*got); !slices.Equal(g, want) {
		t.Fatalf("after the recheck: targets %q, want %q", g, want)
	}
	m.SetMembers(ms[:3])
	m.refresh(now.Add(2 * time.Minute))
	want = []string{"node-2@" + ms[2].Addr.String(), "node-9@" + ms[1].Addr.String()}
	if g := labels(*got); !slices.Equal(g, want) {
		t.Fatalf("after node-3 left: targets %q, want %q", g, want)
	}
}

// TestStaleHelloReply: a reply that does not answer the hello last sent
// to its address (another session, another sender's name, or from an
// address never asked) names nobody.
func TestStaleHelloReply(t *testing.T) {
	ms := members(2)
	n := &net{names: map[netip.AddrPort]string{}} // nobody answers by itself
	m, got := n.node(t, "node-0", ms[0].Addr, 0)
	m.SetMembers(ms)
	m.refresh(time.Unix(100, 0))
	session := m.asked[ms[1].Addr]
	for i, h := range []wire.Header{
		{Flags: wire.FlagHello | wire.FlagReply, Name: []byte("node-0"), Target: []byte("node-1"), Session: session + 2},
		{Flags: wire.FlagHello | wire.FlagReply, Name: []byte("other"), Target: []byte("node-1"), Session: session},
	} {
		m.HelloReply(&h, ms[1].Addr)
		m.refresh(time.Unix(100, 0))
		if len(*got) != 0 {
			t.Fatalf("reply %d named a neighbour: %v", i, *got)
		}
	}
	m.HelloReply(&wire.Header{Name: []byte("node-0"), Target: []byte("node-7"), Session: session},
		netip.MustParseAddrPort("10.7.7.7:6464"))
	m.HelloReply(&wire.Header{Name: []byte("node-0"), Target: []byte("node-1"), Session: session}, ms[1].Addr)
	m.refresh(time.Unix(100, 0))
	if g := fmt.Sprint(labels(*got)); g != "[node-1@"+ms[1].Addr.String()+"]" {
		t.Fatalf("targets %s after the right reply", g)
	}
}

// TestKNeighbours: with k set, a node probes the k members after it on the
// ring, named.
func TestKNeighbours(t *testing.T) {
	ms := members(10)
	n := &net{names: map[netip.AddrPort]string{}}
	for i, mb := range ms {
		n.names[mb.Addr] = fmt.Sprintf("node-%d", i)
	}
	m, got := n.node(t, "node-0", ms[0].Addr, 3)
	m.SetMembers(ms)
	m.refresh(time.Unix(100, 0))
	m.refresh(time.Unix(100, 0))
	var want []string
	for _, nb := range Neighbours(ms, ms[0].Label, 3) {
		want = append(want, n.names[nb.Addr]+"@"+nb.Addr.String())
	}
	slices.Sort(want)
	if g := labels(*got); !slices.Equal(g, want) {
		t.Fatalf("targets %q, want the ring's %q", g, want)
	}
	if n.sent != 3 {
		t.Fatalf("%d hellos for 3 neighbours", n.sent)
	}
}

// TestSharedName: a dual-stack neighbour, found under an IPv4 and an IPv6
// address that answer one name, is probed once, over IPv6, whichever order
// discovery lists them in, and said once at debug level; two addresses of
// one family answering one name are probed once, at the lower, with one
// warning however often the members are looked at.
func TestSharedName(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.2:6464"), netip.MustParseAddrPort("[fd00::2]:6464")
	a, b := netip.MustParseAddrPort("10.0.0.7:6464"), netip.MustParseAddrPort("10.0.0.8:6464")
	self := netip.MustParseAddrPort("10.0.0.1:6464")
	for _, order := range [][]netip.AddrPort{{v4, v6, b, a}, {v6, v4, a, b}} {
		core, logs := observer.New(zap.DebugLevel)
		n := &net{names: map[netip.AddrPort]string{v4: "dual", v6: "dual", a: "twice", b: "twice"}, log: zap.New(core)}
		m, got := n.node(t, "node-0", self, 0)
		var ms []discovery.Target
		for _, ap := range order {
			ms = append(ms, discovery.Target{Label: ap.String(), Addr: ap})
		}
		m.SetMembers(ms)
		now := time.Unix(100, 0)
		for i := range 4 {
			m.refresh(now.Add(time.Duration(i) * time.Second))
		}
		want := []string{"dual@" + v6.String(), "twice@" + a.String()}
		if g := labels(*got); !slices.Equal(g, want) {
			t.Fatalf("members %v: targets %q, want %q", order, g, want)
		}
		debug := logs.FilterMessageSnippet("dual-stack").FilterLevelExact(zap.DebugLevel).Len()
		warn := logs.FilterMessageSnippet("several neighbours answer with one name").FilterLevelExact(zap.WarnLevel).Len()
		if debug != 1 || warn != 1 {
			t.Errorf("members %v: %d dual-stack lines and %d warnings, want one of each", order, debug, warn)
		}
	}
}

// TestMixedFamiliesOnARing: a node with k neighbours warns once when its
// members come to have both families, and again only after they did not.
func TestMixedFamiliesOnARing(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	n := &net{names: map[netip.AddrPort]string{}, log: zap.New(core)}
	m, _ := n.node(t, "node-0", netip.MustParseAddrPort("10.0.0.1:6464"), 2)
	v4 := members(3)
	v6 := discovery.Target{Label: "[fd00::2]:6464", Addr: netip.MustParseAddrPort("[fd00::2]:6464")}
	now := time.Unix(100, 0)
	warned := func() int { return logs.FilterMessageSnippet("IPv4 and IPv6").Len() }
	for i, c := range []struct {
		ms   []discovery.Target
		want int
	}{{v4, 0}, {append(v4, v6), 1}, {append(v4, v6), 1}, {v4, 1}, {append(v4, v6), 2}} {
		m.SetMembers(c.ms)
		m.refresh(now.Add(time.Duration(i) * time.Second))
		if warned() != c.want {
			t.Fatalf("step %d: %d warnings, want %d", i, warned(), c.want)
		}
	}
}

// TestDualStackAnswersSettle: a dual-stack neighbour's IPv4 address
// answers before its IPv6 one; the node waits for the second answer,
// a quarter of HelloEvery at most, and hands the sender the neighbour
// once, at its IPv6 address, never at the IPv4 one first. A member that
// never answers holds the others back that long and no longer.
func TestDualStackAnswersSettle(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.2:6464"), netip.MustParseAddrPort("[fd00::2]:6464")
	dead := netip.MustParseAddrPort("10.0.0.9:6464")
	n := &net{names: map[netip.AddrPort]string{v4: "dual", v6: "dual"}, slow: map[netip.AddrPort]bool{v6: true}}
	m, got := n.node(t, "node-0", netip.MustParseAddrPort("10.0.0.1:6464"), 0)
	var ms []discovery.Target
	for _, ap := range []netip.AddrPort{v4, v6} {
		ms = append(ms, discovery.Target{Label: ap.String(), Addr: ap})
	}
	m.SetMembers(ms)
	now := time.Unix(100, 0)
	m.refresh(now) // both asked; the IPv4 address answers at once
	m.refresh(now.Add(time.Millisecond))
	if len(n.published) != 0 {
		t.Fatalf("published %q while the IPv6 address's answer was due", n.published)
	}
	n.deliver()
	m.refresh(now.Add(2 * time.Millisecond))
	want := []string{"dual@" + v6.String()}
	if !slices.Equal(labels(*got), want) || len(n.published) != 1 {
		t.Fatalf("published %q, want once %q", n.published, want)
	}

	// A member that never answers: the others wait a quarter second.
	n.names[netip.MustParseAddrPort("10.0.0.3:6464")] = "other"
	m.SetMembers(append(ms, discovery.Target{Label: dead.String(), Addr: dead},
		discovery.Target{Label: "10.0.0.3:6464", Addr: netip.MustParseAddrPort("10.0.0.3:6464")}))
	later := now.Add(time.Minute)
	m.refresh(later)
	if len(n.published) != 1 {
		t.Fatalf("published %q while the silent member's answer was due", n.published)
	}
	m.refresh(later.Add(time.Second / 4))
	if len(n.published) != 2 || !slices.Contains(labels(*got), "other@10.0.0.3:6464") {
		t.Fatalf("published %q: want other's address a quarter second after the hellos", n.published)
	}
}
