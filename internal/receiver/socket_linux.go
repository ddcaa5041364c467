package receiver

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize holds the control messages we ask for: SO_RXQ_OVFL (a uint32).
var oobSize = unix.CmsgSpace(4)

// controlSocket runs before bind: it asks the kernel to attach the socket's
// cumulative drop count to every datagram read after a drop (SO_RXQ_OVFL).
func controlSocket(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// setReceiveBuffer asks for size bytes, bypassing net.core.rmem_max when the
// process may (CAP_NET_ADMIN), and returns what the kernel granted. Linux
// reports twice the usable size; we report half, the figure comparable to the
// request.
func setReceiveBuffer(c syscall.RawConn, size int) (granted int, err error) {
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

// parseDrops returns the SO_RXQ_OVFL counter from control messages, without
// allocating. ok is false when the kernel attached none (no drop yet).
func parseDrops(oob []byte) (drops uint32, ok bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && l >= unix.CmsgLen(4) {
			return binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]), true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}
