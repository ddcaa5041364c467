package socket

import (
	"encoding/binary"
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OOBSize holds every control message this package asks for: the drop
// count, the timestamp, and the hop count and traffic class.
var OOBSize = 3*unix.CmsgSpace(4) + unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

// Timestamps is true where the kernel can timestamp received datagrams.
const Timestamps = true

// EnableTimestamps asks for a kernel receive timestamp on every datagram
// (SO_TIMESTAMPNS).
func EnableTimestamps(c syscall.RawConn) error {
	return setInt(c, unix.SO_TIMESTAMPNS)
}

// EnableDrops asks for the socket's cumulative drop count on every datagram
// read after a drop (SO_RXQ_OVFL).
func EnableDrops(c syscall.RawConn) error {
	return setInt(c, unix.SO_RXQ_OVFL)
}

// EnableTraffic asks for the TTL (hop limit) and the TOS (traffic class)
// every datagram arrived with: IP_RECVTTL and IP_RECVTOS, and on a socket
// that takes IPv6 (ipv6), IPV6_RECVHOPLIMIT and IPV6_RECVTCLASS too.
func EnableTraffic(c syscall.RawConn, ipv6 bool) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1),
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1))
		if ipv6 {
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1))
		}
	}); err != nil {
		return err
	}
	return serr
}

// isIPv6 reports whether fd is an IPv6 socket, which sends IPv4 too when
// it is dual stack.
func isIPv6(fd int) bool {
	d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && d == unix.AF_INET6
}

// EnableTrafficOf is EnableTraffic for a socket of either family, asking
// for IPv6's options where the socket is an IPv6 one.
func EnableTrafficOf(c syscall.RawConn) error {
	var v6 bool
	if err := c.Control(func(fd uintptr) { v6 = isIPv6(int(fd)) }); err != nil {
		return err
	}
	return EnableTraffic(c, v6)
}

// SetTrafficClass sets the DSCP and ECN field (tc: DSCP in the high six
// bits, ECN in the low two) of everything the socket sends: the IPv4 TOS
// (IP_TOS), and on an IPv6 socket the IPv6 traffic class (IPV6_TCLASS)
// too, since a dual-stack socket sends IPv4 by the former.
func SetTrafficClass(c syscall.RawConn, tc uint8) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(tc))
		if isIPv6(int(fd)) {
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(tc)))
		}
	}); err != nil {
		return err
	}
	return serr
}

// SetDontFragment has the socket send every datagram with Don't Fragment
// (IPv4) and never fragment one (IPv6), ignoring the path MTU the host
// learnt (IP_PMTUDISC_PROBE, IPV6_PMTUDISC_PROBE and IPV6_DONTFRAG): a
// datagram larger than the path's MTU is dropped where the path narrows,
// every time, so it shows as loss, and one larger than the link it leaves
// by is refused (EMSGSIZE).
func SetDontFragment(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		if isIPv6(int(fd)) {
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1))
		}
	}); err != nil {
		return err
	}
	return serr
}

// TrafficClassControl is the control message that sends one datagram with
// the traffic class tc (DSCP in the high six bits, ECN in the low two),
// whatever the socket's: IP_TOS for IPv4 (from a dual-stack socket too),
// IPV6_TCLASS for IPv6. It is built in b, which must hold
// TrafficClassControlSize bytes.
func TrafficClassControl(b []byte, ipv4 bool, tc uint8) []byte {
	b = b[:TrafficClassControlSize]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
	if ipv4 {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	}
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], uint32(tc))
	return b
}

// TrafficClassControlSize is the size of a TrafficClassControl message.
var TrafficClassControlSize = unix.CmsgSpace(4)

// HopLimits returns the IPv4 TTL and, on an IPv6 socket, the IPv6 hop
// limit the socket sends unicast datagrams with (0 where it does not
// say): the kernel's defaults unless they were set.
func HopLimits(c syscall.RawConn) (v4, v6 uint8, err error) {
	var serr error
	if err := c.Control(func(fd uintptr) {
		ttl, e4 := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
		if e4 == nil && ttl > 0 && ttl < 256 {
			v4 = uint8(ttl)
		}
		serr = e4
		if isIPv6(int(fd)) {
			hops, e6 := unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
			if e6 == nil && hops > 0 && hops < 256 {
				v6 = uint8(hops)
			}
			serr = errors.Join(serr, e6)
		}
	}); err != nil {
		return 0, 0, err
	}
	return v4, v6, serr
}

func setInt(c syscall.RawConn, opt int) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1)
	}); err != nil {
		return err
	}
	return serr
}

// SetReceiveBuffer asks for size bytes, bypassing net.core.rmem_max when the
// process may (CAP_NET_ADMIN), and returns what the kernel granted. Linux
// reports twice the usable size; we report half, the figure comparable to the
// request.
func SetReceiveBuffer(c syscall.RawConn, size int) (granted int, err error) {
	cerr := c.Control(func(fd uintptr) {
		if size > 0 {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
			}
		}
		if err == nil {
			granted, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
			granted /= 2
		}
	})
	if cerr != nil {
		return 0, cerr
	}
	return granted, err
}

// Parse reads the control messages of one datagram without allocating.
// Messages it does not know, and a malformed tail, are ignored.
func Parse(oob []byte) (c Control) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return c
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			c.Drops, c.HasDrops = binary.NativeEndian.Uint32(data), true
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			c.Time, c.HasTime = ts.Nano(), true
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4,
			h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
			c.TTL, c.HasTTL = uint8(binary.NativeEndian.Uint32(data)), true
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
			c.TOS, c.HasTOS = data[0], true // one byte, unlike IPV6_TCLASS's int
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
			c.TOS, c.HasTOS = uint8(binary.NativeEndian.Uint32(data)), true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next >= len(oob) {
			return c
		}
		oob = oob[next:]
	}
	return c
}
