package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// RoutedSenderAddr is the sender's address in a routed lab, on the link to
// the router; the receiver keeps ReceiverAddr, on the other link. In an
// IPv6 routed lab they are RoutedSenderAddr6 and ReceiverAddr6.
const (
	RoutedSenderAddr  = "198.51.100.1"
	RoutedSenderAddr6 = "2001:db8:1::1"
)

// The router's addresses on the sender's link and on the receiver's.
var routerAddrs = map[bool][2]string{false: {"198.51.100.254", "192.0.2.254"}, true: {"2001:db8:1::fe", "2001:db8::fe"}}

// Routed is a sender and a receiver on two links joined by a router: the
// datagrams cross one hop, and the receiver's link can be narrower.
type Routed struct {
	Lab
	// Router is the third namespace; its Dev faces the sender, ToReceiver
	// the receiver.
	Router     Host
	ToReceiver string
}

// NewRouted builds a routed lab whose link to the receiver has an MTU of
// mtu bytes (at both of its ends), and removes it when the test ends.
func NewRouted(t testing.TB, mtu int) *Routed {
	t.Helper()
	return newRouted(t, mtu, false)
}

// NewRouted6 is NewRouted in IPv6 only, set up as New6 is.
func NewRouted6(t testing.TB, mtu int) *Routed {
	t.Helper()
	return newRouted(t, mtu, true)
}

func newRouted(t testing.TB, mtu int, v6 bool) *Routed {
	t.Helper()
	Require(t, "ip")
	sweep(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), labs.Add(1))
	gw := routerAddrs[v6]
	r := &Routed{
		Lab: Lab{
			Sender:   Host{NS: prefix + id + "-s", Dev: "veth-s", Addr: RoutedSenderAddr},
			Receiver: Host{NS: prefix + id + "-r", Dev: "veth-r", Addr: ReceiverAddr},
		},
		Router:     Host{NS: prefix + id + "-gw", Dev: "veth-gs", Addr: gw[0]},
		ToReceiver: "veth-gr",
	}
	plen := "/24"
	if v6 {
		r.Sender.Addr, r.Receiver.Addr, plen = RoutedSenderAddr6, ReceiverAddr6, "/64"
	}
	for _, h := range []Host{r.Sender, r.Receiver, r.Router} {
		run(t, "ip", "netns", "add", h.NS)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.NS).Run() })
		if v6 {
			quietIPv6(t, &r.Lab, h)
		} else {
			// No IPv6: its neighbour discovery would be traffic besides
			// the probes.
			r.Exec(t, h, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
		}
		r.Exec(t, h, "ip", "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", r.Sender.Dev, "netns", r.Sender.NS, "type", "veth",
		"peer", "name", r.Router.Dev, "netns", r.Router.NS)
	run(t, "ip", "link", "add", r.ToReceiver, "netns", r.Router.NS, "type", "veth",
		"peer", "name", r.Receiver.Dev, "netns", r.Receiver.NS)
	gr := Host{NS: r.Router.NS, Dev: r.ToReceiver, Addr: gw[1]}
	for _, h := range []Host{r.Sender, r.Router, gr, r.Receiver} {
		r.Exec(t, h, append([]string{"ip", "addr", "add", h.Addr + plen, "dev", h.Dev}, nodad(v6)...)...)
		r.Exec(t, h, "ip", "link", "set", h.Dev, "up")
	}
	for _, h := range []Host{gr, r.Receiver} {
		r.Exec(t, h, "ip", "link", "set", h.Dev, "mtu", strconv.Itoa(mtu))
	}
	if v6 {
		r.Exec(t, r.Router, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
	} else {
		r.Exec(t, r.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	r.Exec(t, r.Sender, "ip", "route", "add", "default", "via", gw[0])
	r.Exec(t, r.Receiver, "ip", "route", "add", "default", "via", gw[1])
	// Static neighbours, so that no ARP or neighbour discovery crosses the
	// links.
	for _, n := range []struct {
		on   Host
		addr string
		of   Host
	}{
		{r.Sender, gw[0], r.Router}, {r.Router, r.Sender.Addr, r.Sender},
		{gr, r.Receiver.Addr, r.Receiver}, {r.Receiver, gw[1], gr},
	} {
		r.Exec(t, n.on, "ip", "neigh", "replace", n.addr, "lladdr", r.mac(t, n.of), "dev", n.on.Dev, "nud", "permanent")
	}
	return r
}

// The direct link's addresses (AddDirect): the sender's and the
// receiver's, IPv4 and IPv6.
var directAddrs = map[bool][2]string{false: {"203.0.113.1", "203.0.113.2"}, true: {"2001:db8:2::1", "2001:db8:2::2"}}

// AddDirect joins the sender and the receiver of a routed lab (IPv4 or
// IPv6) by a second link, a direct one, and returns route, which sends the
// sender's datagrams to the receiver over it (direct) or through the
// router (not). They go through the router until route says otherwise.
func (r *Routed) AddDirect(t testing.TB) (route func(direct bool)) {
	t.Helper()
	v6 := r.v6()
	// The receiver's route back to the sender stays through the router.
	s, d := r.secondLink(t, Host{NS: r.Sender.NS, Dev: "veth-sd"}, "veth-rd", directAddrs)
	return func(direct bool) {
		via, dev := routerAddrs[v6][0], r.Sender.Dev
		if direct {
			via, dev = d.Addr, s.Dev
		}
		r.Exec(t, r.Sender, "ip", "route", "replace", r.Receiver.Addr+hostPrefix(v6), "via", via, "dev", dev)
	}
}

// hostPrefix is the prefix length of one address.
func hostPrefix(v6 bool) string {
	if v6 {
		return "/128"
	}
	return "/32"
}

// The second link's addresses (AddParallel): the router's and the
// receiver's, IPv4 and IPv6.
var parallelAddrs = map[bool][2]string{false: {"192.0.3.254", "192.0.3.2"}, true: {"2001:db8:3::fe", "2001:db8:3::2"}}

// Hash is what a multipath route hashes a datagram's flow on: the
// router's fib_multipath_hash_policy.
type Hash int

const (
	// HashL3 hashes the addresses and, in IPv6, the flow label.
	HashL3 Hash = 0
	// HashL4 hashes the addresses, the protocol and the ports.
	HashL4 Hash = 1
)

// AddParallel joins the router of a routed lab (IPv4 or IPv6) to the
// receiver by a second link beside the first, and routes the receiver's
// address over both, hashed per flow as hash says, as an ECMP pair of
// paths would. It returns the router's end of each link.
func (r *Routed) AddParallel(t testing.TB, hash Hash) (first, second string) {
	t.Helper()
	v6 := r.v6()
	// The receiver's route back to the sender stays the first link.
	g, d := r.secondLink(t, Host{NS: r.Router.NS, Dev: "veth-gr2"}, "veth-r2", parallelAddrs)
	family := "ipv4"
	if v6 {
		family = "ipv6"
	}
	r.Exec(t, r.Router, "sysctl", "-q", "-w", "net."+family+".fib_multipath_hash_policy="+strconv.Itoa(int(hash)))
	r.Exec(t, r.Router, "ip", "route", "replace", r.Receiver.Addr+hostPrefix(v6),
		"nexthop", "via", r.Receiver.Addr, "dev", r.ToReceiver, "nexthop", "via", d.Addr, "dev", g.Dev)
	return r.ToReceiver, g.Dev
}

// v6 reports whether the lab is an IPv6 one (NewRouted6).
func (r *Routed) v6() bool { return strings.Contains(r.Receiver.Addr, ":") }

// secondLink joins a (the sender's namespace or the router's, and the
// device to make there) to the receiver, on a device of its own, by a veth
// pair with the lab family's addresses of addrs (a's, then the
// receiver's; /24 or /64) and static neighbours, and returns both ends.
// The receiver takes datagrams for its address on either of its links,
// though its route back leaves by one (no reverse path filter; IPv6 has
// none).
func (r *Routed) secondLink(t testing.TB, a Host, dev string, addrs map[bool][2]string) (Host, Host) {
	t.Helper()
	v6 := r.v6()
	a.Addr = addrs[v6][0]
	d := Host{NS: r.Receiver.NS, Dev: dev, Addr: addrs[v6][1]}
	plen := "/24"
	if v6 {
		plen = "/64"
	}
	run(t, "ip", "link", "add", a.Dev, "netns", a.NS, "type", "veth", "peer", "name", d.Dev, "netns", d.NS)
	for _, h := range []Host{a, d} {
		r.Exec(t, h, append([]string{"ip", "addr", "add", h.Addr + plen, "dev", h.Dev}, nodad(v6)...)...)
		r.Exec(t, h, "ip", "link", "set", h.Dev, "up")
	}
	r.Exec(t, a, "ip", "neigh", "replace", d.Addr, "lladdr", r.mac(t, d), "dev", a.Dev, "nud", "permanent")
	r.Exec(t, d, "ip", "neigh", "replace", a.Addr, "lladdr", r.mac(t, a), "dev", d.Dev, "nud", "permanent")
	if !v6 {
		for _, dev := range []string{"all", "default", d.Dev} {
			r.Exec(t, d, "sysctl", "-q", "-w", "net.ipv4.conf."+dev+".rp_filter=0")
		}
	}
	return a, d
}
