package receiver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PDV intervals (RFC 5481 section 4.2): the one-way delays of an
// interval are held until it ends, then each is observed less the
// interval's least. An interval ends pdvInterval after its first delay
// arrived, or at its pdvMaxDelays-th, whichever comes first, so a peer
// holds at most 8 KiB of them; and a waiting time after its session's
// goodbye, so that the datagrams the goodbye overtook still count in it.
const (
	pdvInterval  = int64(10 * time.Second)
	pdvMaxDelays = 1024
)

// pdv is one peer's current PDV interval. The delays are arrival
// (this host's monotonic clock) less send time (the sender's monotonic
// clock): an unknown but constant offset, which the least cancels.
type pdv struct {
	until  int64 // when the interval ends, monotonic ns
	least  int64
	delays []int64
}

// add takes the delay of a datagram that arrived at, ending the interval
// first if it is over.
func (v *pdv) add(delay, at int64, o prometheus.Observer) {
	if len(v.delays) > 0 && (at >= v.until || len(v.delays) == pdvMaxDelays) {
		v.end(o)
	}
	if len(v.delays) == 0 {
		v.until, v.least = at+pdvInterval, delay
	}
	v.least = min(v.least, delay)
	v.delays = append(v.delays, delay)
}

// endBy makes the interval end at the latest at by: its session ended.
func (v *pdv) endBy(by int64) {
	if len(v.delays) > 0 {
		v.until = min(v.until, by)
	}
}

// expire ends the interval if it is over by now.
func (v *pdv) expire(now int64, o prometheus.Observer) {
	if len(v.delays) > 0 && now >= v.until {
		v.end(o)
	}
}

// end observes the interval's delays, each less its least, and starts
// the next one empty.
func (v *pdv) end(o prometheus.Observer) {
	for _, d := range v.delays {
		o.Observe(float64(d-v.least) / 1e9)
	}
	v.delays = v.delays[:0]
}
