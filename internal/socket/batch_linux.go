package socket

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BatchIO is true where a Reader and a Writer move several datagrams per
// system call (recvmmsg, sendmmsg).
const BatchIO = true

// Reader reads datagrams from a UDP socket, up to its size per recvmmsg
// call, into storage it allocates once. Read is not safe for concurrent use;
// Close may be called at any time, and stops a Read in progress.
type Reader struct {
	conn  *net.UDPConn
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

	// After Unpoll the Reader owns the socket (fd) and an eventfd (wake)
	// that Close signals; mu keeps Close from closing them under a Read.
	mu       sync.Mutex
	fd, wake int // -1 while the socket is in the runtime's poller
	deadline atomic.Int64
	closing  atomic.Bool
	closed   bool
	pfds     [2]unix.PollFd
	timeout  unix.Timespec
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
		conn:  c,
		raw:   raw,
		fd:    -1,
		wake:  -1,
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
// Past the deadline it returns an error whose Timeout method is true; after
// Close, net.ErrClosed.
func (r *Reader) Read() ([]Message, error) {
	var err error
	if r.fd < 0 {
		err = r.raw.Read(r.recv)
	} else {
		err = r.readUnpolled()
	}
	if err != nil {
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

// SetDeadline sets when a Read waiting for a datagram gives up; the zero
// time means never.
func (r *Reader) SetDeadline(t time.Time) error {
	if r.fd < 0 {
		return r.conn.SetReadDeadline(t)
	}
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	r.deadline.Store(ns)
	return nil
}

// Close closes the socket. A Read in progress returns net.ErrClosed.
func (r *Reader) Close() error {
	if r.fd < 0 {
		return r.conn.Close()
	}
	if r.closing.Swap(true) {
		return net.ErrClosed
	}
	one := [8]byte{1} // an eventfd adds the 64-bit number written; any will do
	_, err := unix.Write(r.wake, one[:])
	r.mu.Lock() // a Read in ppoll has seen wake and left
	defer r.mu.Unlock()
	r.closed = true
	if err != nil {
		err = os.NewSyscallError("write eventfd", err)
	}
	return errors.Join(err, unix.Close(r.fd), unix.Close(r.wake))
}

// Unpoll takes the socket out of the Go runtime's network poller: the
// Reader keeps a duplicate of its descriptor and closes the connection it
// was made with, whose other methods then fail. Call it before the first
// Read, on a socket that no longer needs the connection's methods.
//
// While a socket is in the poller, every datagram that arrives wakes the
// runtime's idle thread, whether or not a Read waits for it; at low rates
// those wake-ups are most of what a datagram costs a receiver that reads
// in batches between pauses. Out of it, a datagram wakes nobody unless a
// Read is waiting, which then waits in ppoll, a blocking system call.
func (r *Reader) Unpoll() error {
	var fd int
	var derr error
	if err := r.raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return os.NewSyscallError("fcntl", derr)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return os.NewSyscallError("eventfd", err)
	}
	// The duplicate shares the socket's file status, so it stays
	// non-blocking; closing the connection only drops its descriptor.
	if err := r.conn.Close(); err != nil {
		unix.Close(fd)
		unix.Close(wake)
		return err
	}
	r.fd, r.wake = fd, wake
	r.pfds = [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	return nil
}

// readUnpolled reads the socket Unpoll kept, waiting in ppoll while it is
// empty.
func (r *Reader) readUnpolled() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for !r.closed && !r.recvmmsg(uintptr(r.fd)) {
		if err := r.wait(); err != nil {
			return err
		}
	}
	if r.closed {
		return net.ErrClosed
	}
	return nil
}

// wait blocks until the socket is readable, the deadline passes or Close
// signals.
func (r *Reader) wait() error {
	var ts uintptr // nil: no timeout
	if d := r.deadline.Load(); d != 0 {
		left := d - time.Now().UnixNano()
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		r.timeout = unix.NsecToTimespec(left)
		ts = uintptr(unsafe.Pointer(&r.timeout))
	}
	r.pfds[0].Revents, r.pfds[1].Revents = 0, 0
	_, _, errno := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&r.pfds[0])), uintptr(len(r.pfds)),
		ts, 0, 0, 0)
	switch {
	case r.pfds[1].Revents != 0:
		return net.ErrClosed
	case errno != 0 && errno != unix.EINTR:
		return os.NewSyscallError("ppoll", errno)
	}
	return nil // readable, timed out or interrupted: the caller reads again
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
			uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
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

// Writer sends datagrams on a UDP socket, each to its own destination, up
// to its size per sendmmsg call. A Writer is not safe for concurrent use.
type Writer struct {
	raw   syscall.RawConn
	v6    bool // the socket is AF_INET6 (dual-stack: IPv4 goes v4-mapped)
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family
	send  func(fd uintptr) bool   // w.sendmmsg, bound once
	n     int                     // messages to send in this call
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
	w := &Writer{raw: raw, hdrs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size)}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr == nil {
			_, w.v6 = sa.(*unix.SockaddrInet6)
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockname", serr)
	}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
	}
	w.send = w.sendmmsg
	return w, nil
}

// ErrFamily refuses a destination the socket's address family cannot
// reach: IPv6 on an IPv4 socket.
var ErrFamily = errors.New("destination not reachable from this socket's address family")

// Write sends bufs in order, bufs[i] to to[i] (to nil: on a connected
// socket, to its peer), at most the Writer's size of them, and returns how
// many the kernel accepted. If that is fewer than len(bufs), err says why
// bufs[n] was refused; the ones after it were not tried.
func (w *Writer) Write(bufs [][]byte, to []netip.AddrPort) (n int, err error) {
	w.n = min(len(bufs), len(w.hdrs))
	var refused error
	for i, b := range bufs[:w.n] {
		w.iovs[i].Base = unsafe.SliceData(b)
		w.iovs[i].SetLen(len(b))
		h := &w.hdrs[i].Hdr
		if to == nil {
			h.Name, h.Namelen = nil, 0
			continue
		}
		if h.Namelen = w.putName(i, to[i]); h.Namelen == 0 {
			w.n, refused = i, ErrFamily
			break
		}
		h.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.sent = 0
	if w.n > 0 {
		if err := w.raw.Write(w.send); err != nil {
			return w.sent, err
		}
		if w.errno != 0 {
			return w.sent, os.NewSyscallError("sendmmsg", w.errno)
		}
	}
	return w.sent, refused
}

// putName writes the socket address of to into name slot i and returns its
// length, or 0 if the socket's family cannot reach it.
func (w *Writer) putName(i int, to netip.AddrPort) uint32 {
	a := to.Addr()
	if w.v6 {
		sa := &w.names[i]
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		putPort(&sa.Port, to.Port())
		return unix.SizeofSockaddrInet6
	}
	if !a.Unmap().Is4() {
		return 0
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&w.names[i]))
	*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
	putPort(&sa.Port, to.Port())
	return unix.SizeofSockaddrInet4
}

// putPort stores a port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
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
