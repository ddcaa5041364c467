package sender

import (
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// TestQueue: after any sequence of pushes, key changes at the head and
// removals, popping the head in turn yields the keys in order, and every
// target that is in the queue is found where it is.
func TestQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var q queue
		want := map[*target]int64{} // what the queue must hold
		for range 1 + round%60 {
			switch op := rng.IntN(4); {
			case op < 2 || len(q) == 0:
				s := slot{at: rng.Int64N(50), t: &target{}} // few keys: many ties
				q.push(s)
				want[s.t] = s.at
			case op == 2: // the head's next slot, as sendDue moves it
				q[0].at += rng.Int64N(50)
				want[q[0].t] = q[0].at
				q.fix(0)
			default: // a target leaves
				victim := q[rng.IntN(len(q))].t
				i := q.find(victim)
				if i < 0 || q[i].t != victim {
					t.Fatalf("round %d: find did not find a target in the queue", round)
				}
				q.remove(i)
				delete(want, victim)
			}
		}
		var keys []int64
		for _, at := range want {
			keys = append(keys, at)
		}
		slices.Sort(keys)
		var got []int64
		for len(q) > 0 {
			head := q[0]
			if want[head.t] != head.at {
				t.Fatalf("round %d: a target's key is %d, set to %d", round, head.at, want[head.t])
			}
			got = append(got, head.at)
			q.remove(0)
		}
		if !slices.Equal(got, keys) {
			t.Fatalf("round %d: popped %v, want %v", round, got, keys)
		}
	}
}

// TestTargetLayout: what a datagram and its reply read of a target, up to
// its round-trip histogram, is in its first three cache lines, and a
// target is a size class of Go's allocator whose objects start on a line
// (over 320 bytes, at most 384).
func TestTargetLayout(t *testing.T) {
	var tg target
	if size := unsafe.Sizeof(tg); size <= 320 || size > 384 {
		t.Errorf("a target is %d bytes, want 321 to 384", size)
	}
	if end := unsafe.Offsetof(tg.m) + unsafe.Offsetof(tg.m.RTT) + unsafe.Sizeof(tg.m.RTT); end > 3*64 {
		t.Errorf("the round-trip histogram ends at byte %d, past the third line", end)
	}
}
