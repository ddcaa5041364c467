package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// RoutedSenderAddr is the sender's address in a routed lab, on the link to
// the router; the receiver keeps ReceiverAddr, on the other link.
const RoutedSenderAddr = "198.51.100.1"

// The router's addresses on the sender's link and on the receiver's.
const (
	routerSenderSide   = "198.51.100.254"
	routerReceiverSide = "192.0.2.254"
)

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
	Require(t, "ip")
	sweep(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), labs.Add(1))
	r := &Routed{
		Lab: Lab{
			Sender:   Host{NS: prefix + id + "-s", Dev: "veth-s", Addr: RoutedSenderAddr},
			Receiver: Host{NS: prefix + id + "-r", Dev: "veth-r", Addr: ReceiverAddr},
		},
		Router:     Host{NS: prefix + id + "-gw", Dev: "veth-gs", Addr: routerSenderSide},
		ToReceiver: "veth-gr",
	}
	for _, h := range []Host{r.Sender, r.Receiver, r.Router} {
		run(t, "ip", "netns", "add", h.NS)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.NS).Run() })
		// No IPv6: its neighbour discovery would be traffic besides the
		// probes.
		r.Exec(t, h, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
		r.Exec(t, h, "ip", "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", r.Sender.Dev, "netns", r.Sender.NS, "type", "veth",
		"peer", "name", r.Router.Dev, "netns", r.Router.NS)
	run(t, "ip", "link", "add", r.ToReceiver, "netns", r.Router.NS, "type", "veth",
		"peer", "name", r.Receiver.Dev, "netns", r.Receiver.NS)
	gr := Host{NS: r.Router.NS, Dev: r.ToReceiver, Addr: routerReceiverSide}
	for _, h := range []Host{r.Sender, r.Router, gr, r.Receiver} {
		r.Exec(t, h, "ip", "addr", "add", h.Addr+"/24", "dev", h.Dev)
		r.Exec(t, h, "ip", "link", "set", h.Dev, "up")
	}
	for _, h := range []Host{gr, r.Receiver} {
		r.Exec(t, h, "ip", "link", "set", h.Dev, "mtu", strconv.Itoa(mtu))
	}
	r.Exec(t, r.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	r.Exec(t, r.Sender, "ip", "route", "add", "default", "via", routerSenderSide)
	r.Exec(t, r.Receiver, "ip", "route", "add", "default", "via", routerReceiverSide)
	// Static neighbours, so that no ARP crosses the links.
	for _, n := range []struct {
		on   Host
		addr string
		of   Host
	}{
		{r.Sender, routerSenderSide, r.Router}, {r.Router, RoutedSenderAddr, r.Sender},
		{gr, ReceiverAddr, r.Receiver}, {r.Receiver, routerReceiverSide, gr},
	} {
		r.Exec(t, n.on, "ip", "neigh", "replace", n.addr, "lladdr", r.mac(t, n.of), "dev", n.on.Dev, "nud", "permanent")
	}
	return r
}
