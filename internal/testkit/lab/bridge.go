package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Bridge is a network of n hosts, each in its own namespace with one
// address, joined by a bridge in a namespace of its own (the hub), which
// also serves DNS to them. Nothing is shared with the machine's own
// interfaces, and everything is removed when the test ends.
type Bridge struct {
	Lab
	Hosts []Host
	Hub   Host
	DNS   *DNS
	// Addrs6 are the hosts' IPv6 addresses on a dual-stack bridge
	// (NewBridge46), whose Hosts have their IPv4 ones.
	Addrs6 []string
}

// The bridge's networks: hosts at .1, .2, … (::1, ::2, …); the hub at .254
// (::fe).
const (
	bridgeNet  = "10.77.0."
	hubAddr    = bridgeNet + "254"
	bridgeNet6 = "fd77::"
	hubAddr6   = bridgeNet6 + "fe"
)

// NewBridge builds a bridge of n hosts (at most 250) on IPv4 and starts
// its DNS.
func NewBridge(t testing.TB, n int) *Bridge {
	t.Helper()
	return newBridge(t, n, true, false)
}

// NewBridge6 is NewBridge on IPv6 alone: the hosts' addresses, the DNS
// server's and its answers (AAAA) are all IPv6.
func NewBridge6(t testing.TB, n int) *Bridge {
	t.Helper()
	return newBridge(t, n, false, true)
}

// NewBridge46 is NewBridge on both families: every host has an IPv4
// address (Hosts) and an IPv6 one (Addrs6); the DNS server listens on the
// hub's IPv4 address and answers A and AAAA queries.
func NewBridge46(t testing.TB, n int) *Bridge {
	t.Helper()
	return newBridge(t, n, true, true)
}

func newBridge(t testing.TB, n int, v4, v6 bool) *Bridge {
	t.Helper()
	Require(t, "ip")
	sweep(t)
	id := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), labs.Add(1))
	hub := hubAddr
	if !v4 {
		hub = hubAddr6
	}
	b := &Bridge{Hub: Host{NS: id + "-hub", Dev: "br0", Addr: hub}}
	run(t, "ip", "netns", "add", b.Hub.NS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", b.Hub.NS).Run() })
	// Only the families in use: IPv6's neighbour and router discovery
	// would cross an IPv4 bridge besides the probes.
	family := func(h Host) {
		if v6 {
			quietIPv6(t, &b.Lab, h)
			return
		}
		b.Exec(t, h, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	}
	// address gives h its address of each family, i on the bridge's
	// networks (the hub's: 254).
	address := func(h Host, i int) {
		if v4 {
			b.Exec(t, h, "ip", "addr", "add", fmt.Sprintf("%s%d/24", bridgeNet, i), "dev", h.Dev)
		}
		if v6 {
			b.Exec(t, h, "ip", "addr", "add", fmt.Sprintf("%s%x/64", bridgeNet6, i), "dev", h.Dev, "nodad")
		}
	}
	family(b.Hub)
	b.Exec(t, b.Hub, "ip", "link", "add", "br0", "type", "bridge")
	address(b.Hub, 254)
	b.Exec(t, b.Hub, "ip", "link", "set", "br0", "up")
	b.Exec(t, b.Hub, "ip", "link", "set", "lo", "up")
	for i := range n {
		addr := fmt.Sprintf("%s%d", bridgeNet, i+1)
		if !v4 {
			addr = fmt.Sprintf("%s%x", bridgeNet6, i+1)
		} else if v6 {
			b.Addrs6 = append(b.Addrs6, fmt.Sprintf("%s%x", bridgeNet6, i+1))
		}
		h := Host{NS: fmt.Sprintf("%s-h%d", id, i), Dev: "eth0", Addr: addr}
		run(t, "ip", "netns", "add", h.NS)
		t.Cleanup(func() {
			exec.Command("ip", "netns", "del", h.NS).Run()
			os.RemoveAll(filepath.Join("/etc/netns", h.NS))
		})
		port := fmt.Sprintf("p%d", i)
		run(t, "ip", "link", "add", h.Dev, "netns", h.NS, "type", "veth", "peer", "name", port, "netns", b.Hub.NS)
		b.Exec(t, b.Hub, "ip", "link", "set", port, "master", "br0", "up")
		family(h)
		address(h, i+1)
		b.Exec(t, h, "ip", "link", "set", "lo", "up")
		b.Exec(t, h, "ip", "link", "set", h.Dev, "up")
		// ip netns exec mounts /etc/netns/NS/resolv.conf over
		// /etc/resolv.conf: the host's resolver asks the hub.
		dir := filepath.Join("/etc/netns", h.NS)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := "nameserver " + hub + "\noptions timeout:1 attempts:2\n"
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		b.Hosts = append(b.Hosts, h)
	}
	b.DNS = startDNS(t, b.Hub)
	return b
}

// Addr is host i's address as a netip.Addr (its IPv4 one on a dual-stack
// bridge).
func (b *Bridge) Addr(i int) netip.Addr { return netip.MustParseAddr(b.Hosts[i].Addr) }

// Addrs are host i's addresses: its IPv6 one too on a dual-stack bridge.
func (b *Bridge) Addrs(i int) []netip.Addr {
	as := []netip.Addr{b.Addr(i)}
	if i < len(b.Addrs6) {
		as = append(as, netip.MustParseAddr(b.Addrs6[i]))
	}
	return as
}

// DNS answers A and AAAA queries for names the test sets with the
// addresses it sets, of the family asked, and NXDOMAIN for any other
// name: a DNS server for the bridge's hosts whose answers change as a
// test goes on.
type DNS struct {
	mu    sync.Mutex
	names map[string][]netip.Addr // by fully qualified name
	conn  net.PacketConn
}

// Set makes name answer with addrs (none: no records, but the name exists).
func (d *DNS) Set(name string, addrs ...netip.Addr) {
	d.mu.Lock()
	d.names[dnsmessage.MustNewName(name+".").String()] = addrs
	d.mu.Unlock()
}

// startDNS serves DNS on port 53 of the hub's address, inside its
// namespace, until the test ends.
func startDNS(t testing.TB, hub Host) *DNS {
	t.Helper()
	conn, err := listenIn(hub.NS, "udp", netip.AddrPortFrom(netip.MustParseAddr(hub.Addr), 53).String())
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{names: map[string][]netip.Addr{}, conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.serve()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return d
}

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if reply, ok := d.answer(buf[:n]); ok {
			d.conn.WriteTo(reply, from)
		}
	}
}

// answer builds the reply to one query.
func (d *DNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	d.mu.Lock()
	addrs, known := d.names[q.Name.String()]
	d.mu.Unlock()
	rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	bld := dnsmessage.NewBuilder(nil, rh)
	bld.EnableCompression()
	if bld.StartQuestions() != nil || bld.Question(q) != nil || bld.StartAnswers() != nil {
		return nil, false
	}
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
	for _, a := range addrs {
		var err error
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = bld.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = bld.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	reply, err := bld.Finish()
	return reply, err == nil
}

// listenIn opens a socket listening inside namespace ns.
func listenIn(ns, network, addr string) (c net.PacketConn, err error) {
	nerr := inNamespace(ns, func() { c, err = net.ListenPacket(network, addr) })
	return c, errors.Join(nerr, err)
}
