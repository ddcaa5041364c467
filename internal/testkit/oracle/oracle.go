// Package oracle computes what the receiver must report for a given delivery
// order, straight from the RFC definitions and with no cleverness, so that
// tests can compare the real tracker against an independent ground truth. It
// assumes every datagram arrives within the waiting time and the tracking
// window, so nothing is late; tests that exercise lateness assert by hand.
package oracle

import "slices"

// Want is the ground truth for one stream.
type Want struct {
	Received, Lost, Duplicated, Reordered, Expected uint64
	Gaps                                            []uint64 // loss period lengths in sequence order (RFC 3357)
	Extents                                         []uint64 // reordering extents in arrival order (RFC 4737)
	// N are the n-reorderings of the reordered datagrams in arrival order
	// (RFC 4737 section 5): how many first copies just before each, in a
	// row, have higher numbers.
	N []uint64
}

// Classify returns the ground truth for datagrams delivered in the given
// order. last, when not negative, is the last sequence number announced by a
// goodbye.
func Classify(delivered []uint64, last int64) Want {
	var w Want
	if len(delivered) == 0 {
		return w
	}
	seen := map[uint64]bool{}
	var order []uint64 // first copies in arrival order
	for _, s := range delivered {
		if seen[s] {
			w.Duplicated++
			continue
		}
		seen[s] = true
		// RFC 4737: reordered if below the highest sequence number so far; its
		// extent is its position minus that of the earliest arrival above it.
		for j, earlier := range order {
			if earlier > s {
				w.Reordered++
				w.Extents = append(w.Extents, uint64(len(order)-j))
				var n uint64
				for k := len(order) - 1; k >= 0 && order[k] > s; k-- {
					n++
				}
				w.N = append(w.N, n)
				break
			}
		}
		order = append(order, s)
	}
	w.Received = uint64(len(order))
	lo, hi := slices.Min(order), slices.Max(order)
	if last >= 0 && uint64(last) > hi {
		hi = uint64(last)
	}
	w.Expected = hi - lo + 1
	w.Lost = w.Expected - w.Received
	var run uint64
	for s := lo; s <= hi; s++ {
		if seen[s] {
			if run > 0 {
				w.Gaps = append(w.Gaps, run)
			}
			run = 0
			continue
		}
		run++
	}
	if run > 0 {
		w.Gaps = append(w.Gaps, run)
	}
	return w
}
