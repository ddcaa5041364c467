package tracker

// gapQueue is a FIFO of pending gaps in sequence order (and so in deadline
// order: a gap revealed later has higher numbers and a later deadline). It
// grows by doubling up to MaxPendingGaps and keeps its storage afterwards.
type gapQueue struct {
	buf  []gap // len is a power of two
	head int
	n    int
}

func (q *gapQueue) len() int      { return q.n }
func (q *gapQueue) front() *gap   { return &q.buf[q.head] }
func (q *gapQueue) at(i int) *gap { return &q.buf[(q.head+i)&(len(q.buf)-1)] }

func (q *gapQueue) reset() { q.head, q.n = 0, 0 }

func (q *gapQueue) push(g gap) {
	if q.n == len(q.buf) {
		grown := make([]gap, max(16, 2*len(q.buf)))
		for i := range q.n {
			grown[i] = *q.at(i)
		}
		q.buf, q.head = grown, 0
	}
	*q.at(q.n) = g
	q.n++
}

func (q *gapQueue) pop() {
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
}

// revealedAt returns the arrival position of the datagram that revealed the
// pending gap holding seq, found by binary search; zero if none holds it.
func (q *gapQueue) revealedAt(seq uint64) uint64 {
	lo, hi := 0, q.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if q.at(mid).end <= seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < q.n && q.at(lo).start <= seq {
		return q.at(lo).arrival
	}
	return 0
}
