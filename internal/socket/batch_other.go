//go:build !linux

package socket

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// BatchIO is true where a Reader and a Writer move several datagrams per
// system call (recvmmsg, sendmmsg).
const BatchIO = false

// Reader reads one datagram per call here.
type Reader struct {
	c    *net.UDPConn
	buf  []byte
	msgs [1]Message
}

// NewReader prepares to read datagrams of up to slot bytes from c; size is
// ignored where the platform reads one at a time.
func NewReader(c *net.UDPConn, _, slot int) (*Reader, error) {
	return &Reader{c: c, buf: make([]byte, slot)}, nil
}

// Read blocks until a datagram is there and returns it. It is valid until
// the next Read.
func (r *Reader) Read() ([]Message, error) {
	n, _, _, from, err := r.c.ReadMsgUDPAddrPort(r.buf, nil)
	if err != nil {
		return nil, err
	}
	r.msgs[0] = Message{Buf: r.buf[:n], From: from}
	return r.msgs[:], nil
}

// SetDeadline sets when a Read waiting for a datagram gives up.
func (r *Reader) SetDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }

// Close closes the socket. A Read in progress returns net.ErrClosed.
func (r *Reader) Close() error { return r.c.Close() }

// Unpoll does nothing here: the socket stays in the runtime's poller.
func (r *Reader) Unpoll() error { return nil }

// Writer sends one datagram per call here.
type Writer struct{ c *net.UDPConn }

// NewWriter prepares to send on c; size is ignored.
func NewWriter(c *net.UDPConn, _ int) (*Writer, error) { return &Writer{c: c}, nil }

// ErrFamily refuses a destination the socket's address family cannot
// reach (on Linux; here the system call says so).
var ErrFamily = errors.New("destination not reachable from this socket's address family")

// Write sends bufs in order, bufs[i] to to[i] (to nil: on a connected
// socket, to its peer), and returns how many the kernel accepted. If that
// is fewer than len(bufs), err says why bufs[n] was refused.
func (w *Writer) Write(bufs [][]byte, to []netip.AddrPort) (int, error) {
	for i, b := range bufs {
		var err error
		if to == nil {
			_, err = w.c.Write(b)
		} else {
			_, err = w.c.WriteToUDPAddrPort(b, to[i])
		}
		if err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}
