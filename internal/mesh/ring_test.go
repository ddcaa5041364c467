package mesh

import (
	"net/netip"
	"testing"

	"github.com/udpprobe/udpprobe/internal/discovery"
)

func members(n int) []discovery.Target {
	var ms []discovery.Target
	for i := range n {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(1 + i%250)}), 6464)
		ms = append(ms, discovery.Target{Label: a.String(), Addr: a})
	}
	return ms
}

// pairs is every node's neighbours, as prober → set of probed.
func pairs(ms []discovery.Target, k int) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, me := range ms {
		out[me.Label] = map[string]bool{}
		for _, n := range Neighbours(ms, me.Label, k) {
			out[me.Label][n.Label] = true
		}
	}
	return out
}

// TestNeighboursRing: with k neighbours each of 24 members probes exactly
// k others, never itself, and is probed by exactly k; when one member
// leaves, its 2k pairs go and exactly k new ones take the place of the k
// its predecessors had with it: no other pair changes.
func TestNeighboursRing(t *testing.T) {
	for _, k := range []int{1, 3, 5} {
		ms := members(24)
		before := pairs(ms, k)
		in := map[string]int{}
		for prober, probed := range before {
			if len(probed) != k || probed[prober] {
				t.Fatalf("k=%d: %s probes %d (itself: %v)", k, prober, len(probed), probed[prober])
			}
			for p := range probed {
				in[p]++
			}
		}
		for _, m := range ms {
			if in[m.Label] != k {
				t.Fatalf("k=%d: %s is probed by %d", k, m.Label, in[m.Label])
			}
		}
		for leaver := range ms {
			rest := append(append([]discovery.Target(nil), ms[:leaver]...), ms[leaver+1:]...)
			after := pairs(rest, k)
			changed := 0
			for prober, probed := range after {
				for p := range probed {
					if !before[prober][p] {
						changed++ // a new pair
					}
				}
				for p := range before[prober] {
					if !probed[p] && p != ms[leaver].Label {
						changed++ // a pair gone that did not involve the leaver
					}
				}
			}
			if changed != k {
				t.Fatalf("k=%d: %s leaving changed %d pairs among the others, want k", k, ms[leaver].Label, changed)
			}
		}
	}
}

// TestNeighboursAll: k = 0, or k not less than the others, is everyone but
// the node; a node not among the members places itself by its key.
func TestNeighboursAll(t *testing.T) {
	ms := members(5)
	for _, k := range []int{0, 4, 9} {
		if n := Neighbours(ms, ms[2].Label, k); len(n) != 4 {
			t.Fatalf("k=%d: %d neighbours of 5 members, want the 4 others", k, len(n))
		}
	}
	if n := Neighbours(ms, "outsider", 2); len(n) != 2 {
		t.Fatalf("a node outside the members: %d neighbours, want 2", len(n))
	}
}
