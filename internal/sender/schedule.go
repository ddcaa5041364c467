package sender

import "time"

// CatchUp is how far behind schedule the sender still sends the slots it is
// late for, back to back; older slots are skipped and counted as missed. It
// absorbs timer wake-up latency without turning a stall into a burst.
const CatchUp = 20 * time.Millisecond

// schedule is one target's drift-free send schedule: slot k is due at
// start + k/rate, whenever the slots before it were sent. It does no I/O
// and takes the time as an argument.
type schedule struct {
	start    time.Time
	rate     float64
	interval time.Duration
	catchUp  time.Duration // max(CatchUp, one interval)
	next     int64         // the first slot not yet taken
	dues     []time.Time   // the batch take returns; its capacity bounds a batch
}

func newSchedule(start time.Time, rate float64, batch int) schedule {
	interval := time.Duration(float64(time.Second) / rate)
	return schedule{start: start, rate: rate, interval: interval, catchUp: max(interval, CatchUp),
		dues: make([]time.Time, 0, batch)}
}

// due is when slot k is due.
func (s *schedule) due(k int64) time.Time {
	return s.start.Add(time.Duration(float64(k) * float64(time.Second) / s.rate))
}

// take returns the due times of the slots to send at now, once the next
// slot is due: the next slot and the slots after it due by now, up to a
// batch and to most, so none is sent before its time. Slots more than the
// catch-up window behind are skipped first, and their number is returned.
// dues is valid until the next take.
func (s *schedule) take(now time.Time, most int) (dues []time.Time, skipped int64) {
	if behind := now.Sub(s.due(s.next)); behind > s.catchUp {
		skipped = int64((behind - s.catchUp) / s.interval)
		s.next += skipped
	}
	dues = append(s.dues[:0], s.due(s.next))
	for len(dues) < min(cap(s.dues), most) {
		d := s.due(s.next + int64(len(dues)))
		if d.After(now) {
			break
		}
		dues = append(dues, d)
	}
	s.next += int64(len(dues))
	return dues, skipped
}

// queue orders targets by when their next slot is due: a binary heap, so
// that one loop serves any number of targets in O(log n) a datagram. Each
// entry keeps its key beside its target, so that ordering the queue reads
// the heap's own array alone: with many targets, each one's memory is cold
// by the time its slot comes round.
type queue []slot

// slot is a target in the queue, and when its next slot is due (ns since
// the sender's epoch).
type slot struct {
	at int64
	t  *target
}

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q queue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)        { *q = append(*q, x.(slot)) }

func (q *queue) Pop() any {
	old := *q
	s := old[len(old)-1]
	old[len(old)-1] = slot{}
	*q = old[:len(old)-1]
	return s
}

// find is where t is in the queue, or -1: a search, for a target that
// leaves, which is rare beside the slots sent.
func (q queue) find(t *target) int {
	for i, s := range q {
		if s.t == t {
			return i
		}
	}
	return -1
}
