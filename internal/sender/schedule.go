package sender

import "time"

// CatchUp is how far behind schedule the sender still sends the slots it is
// late for, back to back; older slots are skipped and counted as missed. It
// absorbs timer wake-up latency without turning a stall into a burst.
const CatchUp = 20 * time.Millisecond

// schedule is one target's drift-free send schedule: slot k is due at
// start + k/rate, whenever the slots before it were sent. Its times are ns
// since the sender's epoch (its send clock). It does no I/O and takes the
// time as an argument.
type schedule struct {
	start    int64
	rate     float64
	interval time.Duration
	catchUp  time.Duration // max(CatchUp, one interval)
	next     int64         // the first slot not yet taken
}

func newSchedule(start int64, rate float64) schedule {
	interval := time.Duration(float64(time.Second) / rate)
	return schedule{start: start, rate: rate, interval: interval, catchUp: max(interval, CatchUp)}
}

// due is when slot k is due.
func (s *schedule) due(k int64) int64 {
	return s.start + int64(float64(k)*float64(time.Second)/s.rate)
}

// take appends to dues the due times of the slots to send at now, once
// the next slot is due: the next slot and the slots after it due by now,
// up to most, so none is sent before its time. Slots more than the
// catch-up window behind are skipped first, and their number is returned.
// (The caller's slice, not one of the schedule's own: with many targets,
// each one's memory is cold by its next slot.)
func (s *schedule) take(now int64, most int, dues []int64) (_ []int64, skipped int64) {
	if behind := time.Duration(now - s.due(s.next)); behind > s.catchUp {
		skipped = int64((behind - s.catchUp) / s.interval)
		s.next += skipped
	}
	n := len(dues)
	dues = append(dues, s.due(s.next))
	for len(dues)-n < most {
		d := s.due(s.next + int64(len(dues)-n))
		if d > now {
			break
		}
		dues = append(dues, d)
	}
	s.next += int64(len(dues) - n)
	return dues, skipped
}

// queue orders targets by when their next slot is due: a 4-ary min-heap,
// so that one loop serves any number of targets in O(log n) a datagram.
// Each entry keeps its key beside its target, so that ordering the queue
// reads the heap's own array alone: with many targets, each one's memory
// is cold by the time its slot comes round. An entry is 16 bytes, so a
// node's four children lie in one cache line or two, and a thousand
// targets are five levels deep, where a binary heap is ten.
type queue []slot

// slot is a target in the queue, and when its next slot is due (ns since
// the sender's epoch).
type slot struct {
	at int64
	t  *target
}

// arity is how many children a node of the queue has.
const arity = 4

// push adds s.
func (q *queue) push(s slot) {
	*q = append(*q, s)
	q.up(len(*q) - 1)
}

// fix restores the order after the key of entry i changed.
func (q queue) fix(i int) {
	if !q.down(i) {
		q.up(i)
	}
}

// remove takes entry i out.
func (q *queue) remove(i int) {
	last := len(*q) - 1
	(*q)[i] = (*q)[last]
	(*q)[last] = slot{}
	*q = (*q)[:last]
	if i < last {
		q.fix(i)
	}
}

func (q queue) up(i int) {
	s := q[i]
	for i > 0 {
		parent := (i - 1) / arity
		if q[parent].at <= s.at {
			break
		}
		q[i] = q[parent]
		i = parent
	}
	q[i] = s
}

// down moves entry i down to its place and reports whether it moved.
func (q queue) down(i int) bool {
	s, from := q[i], i
	for {
		first := arity*i + 1
		if first >= len(q) {
			break
		}
		least := first
		for c := first + 1; c < min(first+arity, len(q)); c++ {
			if q[c].at < q[least].at {
				least = c
			}
		}
		if q[least].at >= s.at {
			break
		}
		q[i] = q[least]
		i = least
	}
	q[i] = s
	return i > from
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
