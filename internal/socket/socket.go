// Package socket asks the kernel for facts about each received datagram (its
// receive timestamp, the socket's drop counter), reads them back from the
// control messages without allocating, and sizes receive buffers. On
// platforms without these options the functions do nothing and report none.
package socket

import (
	"net/netip"
	"time"
)

// Control is what the kernel attached to one datagram.
type Control struct {
	// Time is the kernel's receive timestamp, ns since the Unix epoch on the
	// kernel's realtime clock. HasTime is false when none was attached.
	Time    int64
	HasTime bool
	// Drops is the socket's cumulative drop counter (SO_RXQ_OVFL); it wraps
	// at 2^32. HasDrops is false until the socket has dropped something.
	Drops    uint32
	HasDrops bool
	// TTL is the IPv4 TTL or IPv6 hop limit the datagram arrived with, and
	// TOS its IPv4 TOS or IPv6 traffic class (DSCP and ECN), where the
	// socket asked for them (EnableTraffic).
	TTL, TOS       uint8
	HasTTL, HasTOS bool
}

// maxQueueing is the longest a datagram is believed to have waited between
// the kernel's timestamp and the read. A longer or negative wait means the
// wall clock stepped in between, and the timestamp is not used.
const maxQueueing = time.Second

// Arrival returns when a datagram arrived, on the wall clock (for one-way
// delay) and on the monotonic clock (for intervals, immune to clock steps).
// readWall and readMono are the two clocks read right after the read. The
// kernel's timestamp is on the wall clock only; the time the datagram
// waited in the socket, readWall − c.Time, is taken off the monotonic
// reading too. Without a usable kernel timestamp the read time is the
// arrival time.
func Arrival(c Control, readWall, readMono int64) (wall, mono int64) {
	waited, ok := Waited(c, readWall)
	if !ok {
		return readWall, readMono
	}
	return c.Time, readMono - int64(waited)
}

// Waited is how long the datagram waited between the kernel's timestamp
// and a read at readWall. ok is false without a kernel timestamp, or when
// the wait is negative or implausibly long: the wall clock stepped.
func Waited(c Control, readWall int64) (waited time.Duration, ok bool) {
	waited = time.Duration(readWall - c.Time)
	return waited, c.HasTime && waited >= 0 && waited <= maxQueueing
}

// Message is one datagram a Reader read.
type Message struct {
	Buf     []byte // the datagram, in the Reader's storage
	From    netip.AddrPort
	Control Control
}
