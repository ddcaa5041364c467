package socket

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestKernelTimestamp: on Linux a datagram read from a socket with
// timestamps enabled carries the kernel's receive time, between the write
// and the read.
func TestKernelTimestamp(t *testing.T) {
	if !Timestamps {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but kernel timestamps are not supported on %s", runtime.GOOS)
		}
		t.Skipf("no kernel receive timestamps on %s", runtime.GOOS)
	}
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := EnableTimestamps(raw); err != nil {
		t.Fatal(err)
	}
	if err := EnableDrops(raw); err != nil {
		t.Fatal(err)
	}
	wc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	before := time.Now().UnixNano()
	if _, err := wc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 16), make([]byte, OOBSize)
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, oobn, _, _, err := rc.ReadMsgUDPAddrPort(buf, oob)
	after := time.Now().UnixNano()
	if err != nil {
		t.Fatal(err)
	}
	c := Parse(oob[:oobn])
	if !c.HasTime || c.Time < before || c.Time > after {
		t.Fatalf("control %+v, want a time in [%d, %d]", c, before, after)
	}
	if c.HasDrops {
		t.Fatalf("a drop count before any drop: %+v", c)
	}
}

// TestParseMalformed: truncated or lying control messages yield nothing
// and never panic.
func TestParseMalformed(t *testing.T) {
	for _, oob := range [][]byte{
		nil,
		{1, 2, 3},
		make([]byte, 64), // a zero length header
		{0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 35, 0, 0, 0}, // length beyond the buffer
	} {
		if c := Parse(oob); c != (Control{}) {
			t.Errorf("Parse(%x) = %+v", oob, c)
		}
	}
}

// TestTraffic: a datagram sent with a TTL and a TOS of its own, over IPv4
// and IPv6, arrives with them read from its control messages.
func TestTraffic(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("the traffic class and hop count are read on Linux only, not %s", runtime.GOOS)
	}
	for _, tc := range []struct {
		network, addr string
		level         int
		ttl, tos      int
	}{
		{"udp4", "127.0.0.1", unix.IPPROTO_IP, unix.IP_TTL, unix.IP_TOS},
		{"udp6", "::1", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unix.IPV6_TCLASS},
	} {
		rc, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.addr)})
		if err != nil {
			t.Fatalf("%s: %v", tc.network, err)
		}
		defer rc.Close()
		raw, _ := rc.SyscallConn()
		if err := EnableTraffic(raw, tc.network == "udp6"); err != nil {
			t.Fatal(err)
		}
		wc, err := net.DialUDP(tc.network, nil, rc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		wraw, _ := wc.SyscallConn()
		var serr error
		wraw.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), tc.level, tc.ttl, 17),
				unix.SetsockoptInt(int(fd), tc.level, tc.tos, 0xb9)) // DSCP 46, ECN 01
		})
		if serr != nil {
			t.Fatal(serr)
		}
		if _, err := wc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if c := readControl(t, rc); !c.HasTTL || c.TTL != 17 || !c.HasTOS || c.TOS != 0xb9 {
			t.Errorf("%s: control %+v, want TTL 17 and TOS 0xb9", tc.network, c)
		}
	}
}

// TestSetTrafficClass: a dual-stack sending socket marks what it sends to
// IPv4 and to IPv6 with the traffic class set, and says the hop limits it
// sends with; a receiving socket of either family asks for what arrived
// by its own family (EnableTrafficOf).
func TestSetTrafficClass(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("the traffic class and hop count are set on Linux only, not %s", runtime.GOOS)
	}
	send, err := net.ListenUDP("udp", nil) // dual stack, as the sender's
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	sraw, _ := send.SyscallConn()
	if err := SetTrafficClass(sraw, 0xb9); err != nil {
		t.Fatal(err)
	}
	v4, v6, err := HopLimits(sraw)
	if err != nil || v4 == 0 || v6 == 0 {
		t.Fatalf("hop limits %d, %d, %v; want both known", v4, v6, err)
	}
	for _, tc := range []struct {
		network, addr string
		hops          uint8
	}{{"udp4", "127.0.0.1:0", v4}, {"udp6", "[::1]:0", v6}} {
		rc, err := net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr)))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		rraw, _ := rc.SyscallConn()
		if err := EnableTrafficOf(rraw); err != nil {
			t.Fatal(err)
		}
		to := rc.LocalAddr().(*net.UDPAddr).AddrPort()
		if tc.network == "udp4" {
			to = netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port()) // v4-mapped, as a dual-stack socket sends
		}
		if _, err := send.WriteToUDPAddrPort([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
		if c := readControl(t, rc); !c.HasTOS || c.TOS != 0xb9 || !c.HasTTL || c.TTL != tc.hops {
			t.Errorf("%s: control %+v, want TOS 0xb9 and hop limit %d", tc.network, c, tc.hops)
		}
	}
}

// readControl reads one datagram from rc and returns its control messages.
func readControl(t *testing.T, rc *net.UDPConn) Control {
	t.Helper()
	buf, oob := make([]byte, 16), make([]byte, OOBSize)
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, oobn, _, _, err := rc.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(oob[:oobn])
}
