package socket

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BatchIO is true where a Reader and a Writer move several datagrams per
// system call (recvmmsg, sendmmsg).
const BatchIO = true

// Reader reads datagrams from a UDP socket, up to its size per recvmmsg
// call, into storage it allocates once. A Reader is not safe for concurrent
// use; the socket's read deadline applies.
type Reader struct {
	raw   syscall.RawConn
	hdrs  []unix.Mmsghdr
	names []unix.RawSockaddrInet6 // room for either family
	iovs  []unix.Iovec
	slot  int    // bytes per datagram
	bufs  []byte // len(hdrs) slots of slot bytes
	oob   []byte // len(hdrs) slots of OOBSize bytes
	msgs  []Message
	recv  func(fd uintptr) bool // r.recvmmsg, bound once so reads allocate nothing
	got   int                   // messages the last call filled
	errno syscall.Errno
}

// NewReader prepares to read up to size datagrams of up to slot bytes each
// per call from c. A longer datagram is cut to slot bytes.
func NewReader(c *net.UDPConn, size, slot int) (*Reader, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	size = max(size, 1)
	r := &Reader{
		raw:   raw,
		slot:  slot,
		hdrs:  make([]unix.Mmsghdr, size),
		names: make([]unix.RawSockaddrInet6, size),
		iovs:  make([]unix.Iovec, size),
		bufs:  make([]byte, size*slot),
		oob:   make([]byte, size*OOBSize),
		msgs:  make([]Message, size),
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		r.iovs[i].Base = &r.bufs[i*r.slot]
		r.iovs[i].SetLen(slot)
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Control = &r.oob[i*OOBSize]
	}
	r.got = size // so that the first call resets every header
	r.recv = r.recvmmsg
	return r, nil
}

// Read blocks until at least one datagram is there and returns those the
// call received. The messages and their bytes are valid until the next Read.
func (r *Reader) Read() ([]Message, error) {
	if err := r.raw.Read(r.recv); err != nil {
		return nil, err
	}
	if r.errno != 0 {
		return nil, os.NewSyscallError("recvmmsg", r.errno)
	}
	for i := range r.got {
		h := &r.hdrs[i]
		m := &r.msgs[i]
		m.Buf = r.bufs[i*r.slot : i*r.slot+int(h.Len)]
		m.From = addrPort(&r.names[i])
		m.Control = Parse(r.oob[i*OOBSize : i*OOBSize+int(h.Hdr.Controllen)])
	}
	return r.msgs[:r.got], nil
}

// recvmmsg is the raw read. It reports false, to wait for readability, only
// when the socket is empty.
func (r *Reader) recvmmsg(fd uintptr) bool {
	for i := range r.got { // the kernel rewrote these lengths
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(OOBSize)
		h.Flags = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
			uintptr(len(r.hdrs)), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.got = 0
			return false
		}
		r.got, r.errno = int(n), errno
		if errno != 0 {
			r.got = 0
		}
		return true
	}
}

// addrPort converts a kernel socket address without allocating, except for
// the zone of a scoped IPv6 address, which is kept as its index.
func addrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// Writer sends datagrams on a connected UDP socket, up to its size per
// sendmmsg call. A Writer is not safe for concurrent use.
type Writer struct {
	raw   syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	send  func(fd uintptr) bool // w.sendmmsg, bound once
	n     int                   // messages to send in this call
	sent  int
	errno syscall.Errno
}

// NewWriter prepares to send up to size datagrams per call on c.
func NewWriter(c *net.UDPConn, size int) (*Writer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	size = max(size, 1)
	w := &Writer{raw: raw, hdrs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size)}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
	}
	w.send = w.sendmmsg
	return w, nil
}

// Write sends bufs in order, at most the Writer's size of them, and returns
// how many the kernel accepted. If that is fewer than len(bufs), err says
// why bufs[n] was refused; the ones after it were not tried.
func (w *Writer) Write(bufs [][]byte) (n int, err error) {
	w.n = min(len(bufs), len(w.hdrs))
	for i, b := range bufs[:w.n] {
		w.iovs[i].Base = unsafe.SliceData(b)
		w.iovs[i].SetLen(len(b))
	}
	w.sent = 0
	if err := w.raw.Write(w.send); err != nil {
		return w.sent, err
	}
	if w.errno != 0 {
		return w.sent, os.NewSyscallError("sendmmsg", w.errno)
	}
	return w.sent, nil
}

// sendmmsg is the raw write. It reports false, to wait for room in the
// socket's send buffer, only when the kernel would block.
func (w *Writer) sendmmsg(fd uintptr) bool {
	w.errno = 0
	for w.sent < w.n {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])),
			uintptr(w.n-w.sent), 0, 0, 0)
		switch errno {
		case 0:
			w.sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			w.errno = errno
			return true
		}
	}
	return true
}
