// Package lab builds networks out of Linux network namespaces, for tests:
// the workshop's two hosts, a sender and a receiver joined by a veth pair
// (New, and New6 for IPv6), the two with a router between them
// (NewRouted, NewRouted6), and a bridge of many hosts with a DNS server whose answers the
// test changes (NewBridge), for meshes. Each host has its own address,
// loopback and firewall, and nothing is shared with the machine's own
// interfaces. It needs root and iproute2;
// impairments need nftables (random drops) and tc (tbf, and netem where the
// kernel has it).
//
// Both hosts get the same addresses in every lab (192.0.2.1 and
// 192.0.2.2, TEST-NET-1): namespaces isolate them, so only the names must
// be unique, and they carry the process id and a counter. Everything is
// removed when the test ends, whatever its outcome; namespaces left by a
// test process that was killed are removed by the next New.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// The addresses of the two hosts, and in an IPv6 lab (New6).
const (
	SenderAddr    = "192.0.2.1"
	ReceiverAddr  = "192.0.2.2"
	SenderAddr6   = "2001:db8::1"
	ReceiverAddr6 = "2001:db8::2"
)

const prefix = "udpprobe-lab-"

var labs atomic.Int64

// Host is one namespace.
type Host struct {
	NS   string // namespace name
	Dev  string // its end of the veth pair
	Addr string
}

// Lab is a sender host and a receiver host on one link.
type Lab struct {
	Sender, Receiver Host
}

// Require skips the test, or fails it when CI=true, unless the process is
// root and the commands exist.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("the namespace lab needs %s", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// New builds a lab and removes it when the test ends.
func New(t testing.TB) *Lab {
	t.Helper()
	return newLab(t, false)
}

// New6 builds a lab whose hosts speak IPv6 only, at SenderAddr6 and
// ReceiverAddr6, with static neighbours and no duplicate address
// detection or router solicitation, and removes it when the test ends.
func New6(t testing.TB) *Lab {
	t.Helper()
	return newLab(t, true)
}

func newLab(t testing.TB, v6 bool) *Lab {
	t.Helper()
	Require(t, "ip")
	sweep(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), labs.Add(1))
	l := &Lab{
		Sender:   Host{NS: prefix + id + "-s", Dev: "veth-s", Addr: SenderAddr},
		Receiver: Host{NS: prefix + id + "-r", Dev: "veth-r", Addr: ReceiverAddr},
	}
	if v6 {
		l.Sender.Addr, l.Receiver.Addr = SenderAddr6, ReceiverAddr6
	}
	for _, h := range []Host{l.Sender, l.Receiver} {
		run(t, "ip", "netns", "add", h.NS)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.NS).Run() })
	}
	run(t, "ip", "link", "add", l.Sender.Dev, "netns", l.Sender.NS, "type", "veth",
		"peer", "name", l.Receiver.Dev, "netns", l.Receiver.NS)
	for _, h := range []Host{l.Sender, l.Receiver} {
		if v6 {
			quietIPv6(t, l, h)
			l.Exec(t, h, "ip", "addr", "add", h.Addr+"/64", "dev", h.Dev, "nodad")
		} else {
			// No IPv6: its neighbour discovery would be traffic on the
			// link besides the probes, and the impairments count what
			// they drop.
			l.Exec(t, h, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
			l.Exec(t, h, "ip", "addr", "add", h.Addr+"/24", "dev", h.Dev)
		}
		l.Exec(t, h, "ip", "link", "set", "lo", "up")
		l.Exec(t, h, "ip", "link", "set", h.Dev, "up")
	}
	// Static neighbours, so that no ARP or neighbour discovery crosses the
	// link either.
	l.Exec(t, l.Sender, "ip", "neigh", "replace", l.Receiver.Addr, "lladdr", l.mac(t, l.Receiver), "dev", l.Sender.Dev, "nud", "permanent")
	l.Exec(t, l.Receiver, "ip", "neigh", "replace", l.Sender.Addr, "lladdr", l.mac(t, l.Sender), "dev", l.Receiver.Dev, "nud", "permanent")
	return l
}

// quietIPv6 keeps IPv6 in h from sending what the probes do not need: no
// duplicate address detection (an address would be tentative for a
// second), no router solicitation, no autoconfiguration.
func quietIPv6(t testing.TB, l *Lab, h Host) {
	t.Helper()
	for _, k := range []string{"accept_dad=0", "accept_ra=0", "autoconf=0", "router_solicitations=0"} {
		l.Exec(t, h, "sysctl", "-q", "-w", "net.ipv6.conf.default."+k, "net.ipv6.conf.all."+k)
	}
}

// nodad is the ip addr add flag that skips duplicate address detection,
// for an IPv6 address.
func nodad(v6 bool) []string {
	if v6 {
		return []string{"nodad"}
	}
	return nil
}

// sweep removes the namespaces of lab processes that no longer run.
func sweep(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	stale := regexp.MustCompile(`(?m)^` + prefix + `(\d+)-\d+-(?:s|r|gw|hub|h\d+)\b`)
	for _, m := range stale.FindAllStringSubmatch(string(out), -1) {
		pid, _ := strconv.Atoi(m[1])
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			exec.Command("ip", "netns", "del", strings.Fields(m[0])[0]).Run()
		}
	}
}

func (l *Lab) mac(t testing.TB, h Host) string {
	t.Helper()
	return strings.TrimSpace(l.Exec(t, h, "cat", "/sys/class/net/"+h.Dev+"/address"))
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs a command in h's namespace and returns its output; a failure
// fails the test.
func (l *Lab) Exec(t testing.TB, h Host, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
}

// Output runs a command in h's namespace and returns its combined output
// and error, for commands whose failure the caller examines.
func (l *Lab) Output(h Host, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.NS}, args...)...).CombinedOutput()
	return string(out), err
}

// Start runs a program in h's namespace until the test ends. ip netns exec
// execs the program, so the process is the program itself.
func (l *Lab) Start(t testing.TB, h Host, env []string, bin string, args ...string) *testproc.Process {
	t.Helper()
	name := strings.Join(append([]string{filepath.Base(bin)}, args...), " ") + " in " + h.NS
	return testproc.StartAs(t, name, env, "ip", append([]string{"netns", "exec", h.NS, bin}, args...)...)
}

// Get fetches url from inside h's namespace: the connection is made by a
// thread that has entered it, so a daemon listening on h's loopback can be
// scraped from the test.
func (l *Lab) Get(t testing.TB, h Host, url string) string {
	t.Helper()
	body, err := l.Fetch(h, url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// Client is an HTTP client whose connections start in h's namespace.
func Client(h Host) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, h.NS, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// Listen opens a TCP listener inside h's namespace, for a server the
// programs there must reach (a webhook).
func Listen(h Host, addr string) (l net.Listener, err error) {
	nerr := inNamespace(h.NS, func() { l, err = net.Listen("tcp", addr) })
	return l, errors.Join(nerr, err)
}

// Fetch is Get returning the error.
func (l *Lab) Fetch(h Host, url string) (string, error) {
	resp, err := Client(h).Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s in %s: %w", url, h.NS, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err != nil {
		return "", fmt.Errorf("GET %s in %s: %w", url, h.NS, err)
	}
	return string(b), nil
}

// dialIn opens the connection's socket inside namespace ns.
func dialIn(ctx context.Context, ns, network, addr string) (c net.Conn, err error) {
	nerr := inNamespace(ns, func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, errors.Join(nerr, err)
}

// inNamespace runs f on a thread inside namespace ns, for calls that make
// sockets: a socket stays in the namespace it was made in, so only that
// call needs the locked thread to be there. The thread goes back before it
// is unlocked, and if it cannot, it stays locked and ends with the
// goroutine.
func inNamespace(ns string, f func()) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: %w", ns, err)
	}
	f()
	if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return nil
}
