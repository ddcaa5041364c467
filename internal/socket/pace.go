package socket

import "time"

// MaxHold is the longest a reader waits, after a read that emptied the
// socket, before it reads again, with a receive buffer of 4 MiB; smaller
// buffers get proportionally shorter holds. At low and moderate rates one
// wake-up then takes many datagrams instead of one, which is most of the
// CPU a datagram costs. Arrival times are the kernel's timestamps, so the
// hold changes no measurement: a reader holds only where the kernel
// timestamps, and only what nothing waits for (a receiver that reflects
// must answer at once; a sender's replies only feed its counts). A step to
// 200,000 small datagrams/s during a hold fills about a quarter of the
// buffer, and the hold adapts to what the reads find (see Pacer.Next).
const MaxHold = 10 * time.Millisecond

// minHold is the shortest hold; a shorter one would save no wake-ups.
const minHold = 50 * time.Microsecond

// skbOverhead is roughly what the kernel charges a queued datagram beyond
// its bytes (832 bytes for a 60-byte datagram on Linux 6 x86-64), rounded up.
const skbOverhead = 1024

// Pacer decides how long a reader holds after a read that emptied the
// socket. The zero Pacer never holds.
type Pacer struct {
	hold   time.Duration // the next hold
	max    time.Duration // 0: no holds
	budget int           // bytes of queue a hold may let build up
	queued int           // kernel bytes read since the last hold, estimated
}

// NewPacer scales the longest hold to the granted receive buffer.
func NewPacer(granted int) Pacer {
	hold := min(MaxHold, time.Duration(float64(MaxHold)*float64(granted)/float64(4<<20)))
	// The kernel's limit is twice the granted size; a hold may fill a quarter.
	return Pacer{hold: hold, max: hold, budget: granted / 2}
}

// Holds reports whether the pacer ever holds.
func (p *Pacer) Holds() bool { return p.max > 0 }

// Longest is the longest hold: a datagram that arrived is read at most
// this long after (and the reader's own scheduling) later.
func (p *Pacer) Longest() time.Duration { return p.max }

// Queue counts a datagram of n bytes read off the socket.
func (p *Pacer) Queue(n int) { p.queued += n + skbOverhead }

// Next adapts the hold to what queued up since the last one and returns it:
// over the budget it shrinks fourfold, under an eighth of the budget it
// doubles, up to the maximum.
func (p *Pacer) Next() time.Duration {
	switch {
	case p.queued > p.budget:
		p.hold = max(minHold, p.hold/4)
	case p.queued < p.budget/8:
		p.hold = min(p.max, 2*p.hold)
	}
	p.queued = 0
	return p.hold
}
