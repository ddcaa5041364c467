package mesh

import (
	"hash/fnv"
	"slices"
	"strings"

	"github.com/udpprobe/udpprobe/internal/discovery"
)

// position is where a member sits on the ring: a hash of its label, which
// every node that discovers the same members computes alike.
func position(label string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(label))
	return h.Sum64()
}

// Neighbours returns the members a node probes: with k = 0, or k at least
// the number of other members, all of them; otherwise the k that follow
// the node on the ring. self is the node's own label among the members (it
// is never its own neighbour), or, if the node is not among them, the key
// it places itself by. While every node sees the same members, each is
// probed by exactly k others, and a member leaving changes 2k pairs: its
// own k go, and each of its k predecessors probes the next member instead
// of it.
func Neighbours(members []discovery.Target, self string, k int) []discovery.Target {
	ring := make([]discovery.Target, 0, len(members))
	for _, m := range members {
		if m.Label != self {
			ring = append(ring, m)
		}
	}
	if k <= 0 || k >= len(ring) {
		return ring
	}
	slices.SortFunc(ring, func(a, b discovery.Target) int {
		if pa, pb := position(a.Label), position(b.Label); pa != pb {
			if pa < pb {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Label, b.Label)
	})
	me := position(self)
	first, _ := slices.BinarySearchFunc(ring, me, func(m discovery.Target, p uint64) int {
		switch pm := position(m.Label); {
		case pm < p:
			return -1
		case pm > p:
			return 1
		}
		return strings.Compare(m.Label, self)
	})
	out := make([]discovery.Target, 0, k)
	for i := range k {
		out = append(out, ring[(first+i)%len(ring)])
	}
	return out
}
