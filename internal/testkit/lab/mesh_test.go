package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// The mesh lab: meshNodes hosts on one bridge, every one running udpprobe
// mesh with the members from one DNS name.
const (
	meshNodes = 12
	meshName  = "mesh.test"
	meshWeb   = "http://127.0.0.1:8466/metrics"
	meshRate  = 50
	// meshExpiry outlasts the checks made after a leave: the others'
	// sessions with the leaver end up to a resolve interval apart, and
	// scraping a dozen nodes on a loaded machine takes seconds; the
	// streams must still be in the table when they are read.
	meshExpiry  = 10 * time.Second
	meshTimeout = 200 * time.Millisecond
)

type meshLab struct {
	b     *Bridge
	nodes []*testproc.Process
}

func nodeName(i int) string { return fmt.Sprintf("node-%02d", i) }

// without is nodes but x.
func without(nodes []int, x int) []int {
	var out []int
	for _, i := range nodes {
		if i != x {
			out = append(out, i)
		}
	}
	return out
}

// metrics scrapes node i.
func (m *meshLab) metrics(t *testing.T, i int) scrape.Samples {
	t.Helper()
	s, err := scrape.Parse(strings.NewReader(m.b.Get(t, m.b.Hosts[i], meshWeb)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// members makes the DNS name answer with the addresses of the nodes given
// (both of each on a dual-stack bridge).
func (m *meshLab) members(nodes ...int) {
	var addrs []netip.Addr
	for _, i := range nodes {
		addrs = append(addrs, m.b.Addrs(i)...)
	}
	m.b.DNS.Set(meshName, addrs...)
}

// start runs udpprobe mesh on every host, the members from the DNS name,
// with env besides, and waits until each serves its metrics.
func (m *meshLab) start(t *testing.T, bin string, env ...string) {
	t.Helper()
	for i, h := range m.b.Hosts {
		p := m.b.Start(t, h, append([]string{"UDPPROBE_NAME=" + nodeName(i), "UDPPROBE_TARGETS=" + meshName + ":6464",
			"UDPPROBE_LISTEN_ADDRESS=:6464", "UDPPROBE_WEB_LISTEN_ADDRESS=127.0.0.1:8466",
			"UDPPROBE_RESOLVE_INTERVAL=1s", fmt.Sprintf("UDPPROBE_RATE=%d", meshRate),
			"UDPPROBE_LOSS_TIMEOUT=" + meshTimeout.String(), "UDPPROBE_PEER_EXPIRY=" + meshExpiry.String(),
			"UDPPROBE_LOG_FORMAT=json"}, env...), bin, "mesh")
		m.nodes = append(m.nodes, p)
	}
	for _, p := range m.nodes {
		p.Await(t, `"msg":"serving metrics"`)
	}
}

// await polls cond every 100 ms for up to limit.
func await(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", limit, what)
		}
	}
}

// probes reports whether node i probes node j now (it has a target of that
// name).
func (m *meshLab) probes(s scrape.Samples, i, j int) bool {
	_, ok := s[scrape.Series("udpprobe_sender_packets_sent_total", "sender", nodeName(i), "target", nodeName(j))]
	return ok
}

// sent is what node i's log says it sent to node j (Sent).
func (m *meshLab) sent(t *testing.T, i, j int) (total uint64, sessions int) {
	t.Helper()
	total, sessions, err := Sent(m.nodes[i].Lines(), nodeName(j))
	if err != nil {
		t.Fatal(err)
	}
	return total, sessions
}

// exact checks the pair i → j at node j, whose streams from i have all
// ended with a goodbye: received is what i sent, and nothing else moved.
func (m *meshLab) exact(t *testing.T, s scrape.Samples, i, j int) {
	t.Helper()
	sent, sessions := m.sent(t, i, j)
	c := func(name string) uint64 {
		return uint64(s[scrape.Series("udpprobe_receiver_"+name, "sender", nodeName(i), "target", nodeName(j))])
	}
	if sessions == 0 || sent == 0 || c("packets_received_total") != sent || c("packets_lost_total") != 0 ||
		c("packets_duplicated_total") != 0 || c("packets_reordered_total") != 0 || c("packets_late_total") != 0 ||
		c("session_ended") != 1 {
		t.Errorf("%s → %s: sent %d in %d sessions; received %d, lost %d, duplicated %d, reordered %d, late %d, ended %d",
			nodeName(i), nodeName(j), sent, sessions, c("packets_received_total"), c("packets_lost_total"),
			c("packets_duplicated_total"), c("packets_reordered_total"), c("packets_late_total"), c("session_ended"))
	}
}

// TestMeshLab runs a mesh of 12 hosts in namespaces on one bridge, the
// members from one DNS name: every node probes the 11 others by name; a
// node the DNS name starts to answer is probed by all within a resolve
// interval and a hello; one it stops answering, and that then stops, is
// left cleanly and its series go after the peer expiry; at the end every
// one of the pairs that ran is exact, each receiver having got exactly
// what its sender's log says it sent, nothing lost, duplicated,
// reordered or late.
func TestMeshLab(t *testing.T) {
	b := NewBridge(t, meshNodes)
	m := &meshLab{b: b}
	bin := testproc.Build(t, "../../../cmd/udpprobe")
	joiner, leaver := meshNodes-1, 5
	all := make([]int, meshNodes)
	for i := range all {
		all[i] = i
	}
	first := without(all, joiner)
	m.members(first...)
	m.start(t, bin)
	start := time.Now()

	// Every node of the first eleven probes the ten others; the joiner,
	// not yet a member, probes them too but nobody probes it.
	await(t, "the first eleven probe each other by name", 15*time.Second, func() bool {
		for _, i := range first {
			s := m.metrics(t, i)
			for _, j := range first {
				if i != j && !m.probes(s, i, j) {
					return false
				}
			}
		}
		return true
	})
	for _, i := range first {
		if m.probes(m.metrics(t, i), i, joiner) {
			t.Fatalf("%s probes %s before the DNS name answers with it", nodeName(i), nodeName(joiner))
		}
	}

	// The joiner joins: within a resolve interval and a hello, all probe it.
	m.members(append(first, joiner)...)
	joined := time.Now()
	await(t, "every node probes the joiner", 10*time.Second, func() bool {
		for _, i := range first {
			if !m.probes(m.metrics(t, i), i, joiner) {
				return false
			}
		}
		return true
	})
	t.Logf("the joiner was probed by all %v after the DNS name answered with it", time.Since(joined).Round(100*time.Millisecond))

	// Let the full mesh run for a while.
	time.Sleep(max(0, 20*time.Second-time.Since(start)))

	// The leaver leaves: the others end their sessions with it, then it
	// stops and ends its own; every pair with it is exact, and its series
	// leave the others once it has been silent for the peer expiry.
	rest := without(all, leaver)
	m.members(rest...)
	await(t, "nobody probes the leaver", 5*time.Second, func() bool {
		for _, i := range rest {
			if m.probes(m.metrics(t, i), i, leaver) {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * meshTimeout) // the goodbyes' streams settle
	s := m.metrics(t, leaver)
	for _, i := range rest {
		m.exact(t, s, i, leaver)
	}
	if code := m.nodes[leaver].Stop(t); code != 0 {
		t.Fatalf("the leaver exited %d", code)
	}
	time.Sleep(3 * meshTimeout)
	for _, j := range rest {
		m.exact(t, m.metrics(t, j), leaver, j)
	}
	await(t, "the leaver's series expire everywhere", meshExpiry+5*time.Second, func() bool {
		for _, j := range rest {
			if _, ok := m.metrics(t, j)[scrape.Series("udpprobe_receiver_packets_received_total", "sender", nodeName(leaver),
				"target", nodeName(j))]; ok {
				return false
			}
		}
		return true
	})

	// The end: the name answers with node 0 alone, so every node leaves
	// every other but node 0, whose streams end as the nodes stop.
	m.members(0)
	await(t, "the nodes probe node 0 alone", 5*time.Second, func() bool {
		for _, i := range rest {
			s := m.metrics(t, i)
			for _, j := range rest {
				if i != j && j != 0 && m.probes(s, i, j) {
					return false
				}
			}
		}
		return true
	})
	time.Sleep(3 * meshTimeout)
	pairs := 0
	for _, j := range rest[1:] {
		s := m.metrics(t, j)
		for _, i := range rest {
			if i != j {
				m.exact(t, s, i, j)
				pairs++
			}
		}
	}
	for _, i := range rest[1:] {
		if code := m.nodes[i].Stop(t); code != 0 {
			t.Fatalf("%s exited %d", nodeName(i), code)
		}
	}
	time.Sleep(3 * meshTimeout)
	s = m.metrics(t, 0)
	for _, i := range rest[1:] {
		m.exact(t, s, i, 0)
		pairs++
	}
	// And the leaver's 20 pairs, checked above.
	t.Logf("%d pairs exact at the end, and the leaver's %d; the mesh ran %v", pairs, 2*len(rest),
		time.Since(start).Round(time.Second))
	if pairs != (meshNodes-1)*(meshNodes-2) {
		t.Fatalf("%d pairs checked at the end, want %d", pairs, (meshNodes-1)*(meshNodes-2))
	}
}

// TestMeshLab6 runs a mesh of 6 hosts on an IPv6 bridge, the members from
// one DNS name answering AAAA records: every pair exact (allPairs).
func TestMeshLab6(t *testing.T) {
	m := &meshLab{b: NewBridge6(t, 6)}
	m.allPairs(t)
}

// TestMeshLabDualStack runs a mesh of 4 hosts on a dual-stack bridge, the
// members from one DNS name answering an A and an AAAA record for each
// node, so that every neighbour is found twice: by default every node
// probes each neighbour once, over IPv6, and with UDPPROBE_IP_FAMILY=ipv4
// once over IPv4; either way every pair is exact (allPairs).
func TestMeshLabDualStack(t *testing.T) {
	for _, c := range []struct {
		family string
		v6     bool
	}{{"any", true}, {"ipv4", false}} {
		t.Run(c.family, func(t *testing.T) {
			m := &meshLab{b: NewBridge46(t, 4)}
			m.allPairs(t, "UDPPROBE_IP_FAMILY="+c.family)
			for i, p := range m.nodes {
				if err := ProbedOnce(p.Lines(), len(m.nodes)-1, c.v6); err != nil {
					t.Errorf("%s: %v", nodeName(i), err)
				}
			}
		})
	}
}

// allPairs starts a mesh node on every host of the bridge, with env
// besides, the members from one DNS name: every node probes the others by
// name; then the name answers with node 0 alone, every node leaves the
// others but node 0, and all stop: every one of the pairs is exact.
func (m *meshLab) allPairs(t *testing.T, env ...string) {
	t.Helper()
	n := len(m.b.Hosts)
	bin := testproc.Build(t, "../../../cmd/udpprobe")
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	m.members(all...)
	m.start(t, bin, env...)
	await(t, "every node probes the others by name", 15*time.Second, func() bool {
		for i := range all {
			s := m.metrics(t, i)
			for j := range all {
				if i != j && !m.probes(s, i, j) {
					return false
				}
			}
		}
		return true
	})
	time.Sleep(5 * time.Second)
	m.members(0)
	rest := without(all, 0)
	// Every node leaves every node but 0, node 0 among them (it probes
	// nobody then), each at its own next resolve.
	await(t, "the nodes probe node 0 alone", 5*time.Second, func() bool {
		for _, i := range all {
			s := m.metrics(t, i)
			for _, j := range rest {
				if i != j && m.probes(s, i, j) {
					return false
				}
			}
		}
		return true
	})
	time.Sleep(3 * meshTimeout)
	pairs := 0
	for _, j := range rest {
		s := m.metrics(t, j)
		for _, i := range all {
			if i != j {
				m.exact(t, s, i, j)
				pairs++
			}
		}
	}
	for _, i := range rest {
		if code := m.nodes[i].Stop(t); code != 0 {
			t.Fatalf("%s exited %d", nodeName(i), code)
		}
	}
	time.Sleep(3 * meshTimeout)
	s := m.metrics(t, 0)
	for _, i := range rest {
		m.exact(t, s, i, 0)
		pairs++
	}
	if pairs != n*(n-1) {
		t.Fatalf("%d pairs checked, want %d", pairs, n*(n-1))
	}
}

// TestMeshNeighbours runs 24 nodes with 3 neighbours each, the members
// from one DNS name: every node probes exactly 3 and is probed by exactly
// 3; when one member leaves the name, at most 2k pairs of the others
// change (the k into it go, and each of its k predecessors probes the next
// member instead).
func TestMeshNeighbours(t *testing.T) {
	const nodes, k = 24, 3
	b := NewBridge(t, nodes)
	m := &meshLab{b: b}
	bin := testproc.Build(t, "../../../cmd/udpprobe")
	all := make([]int, nodes)
	for i := range all {
		all[i] = i
	}
	m.members(all...)
	for i, h := range b.Hosts {
		m.nodes = append(m.nodes, b.Start(t, h, []string{"UDPPROBE_NAME=" + nodeName(i),
			"UDPPROBE_TARGETS=" + meshName + ":6464", "UDPPROBE_WEB_LISTEN_ADDRESS=127.0.0.1:8466",
			"UDPPROBE_RESOLVE_INTERVAL=1s", fmt.Sprintf("UDPPROBE_NEIGHBOURS=%d", k), "UDPPROBE_RATE=10",
			"UDPPROBE_LOG_FORMAT=json"}, bin, "mesh"))
	}
	for _, p := range m.nodes {
		p.Await(t, `"msg":"serving metrics"`)
	}
	// pairs is who probes whom, from the senders' series.
	pairs := func(nodes []int) map[[2]int]bool {
		out := map[[2]int]bool{}
		for _, i := range nodes {
			s := m.metrics(t, i)
			for _, j := range all {
				if j != i && m.probes(s, i, j) {
					out[[2]int{i, j}] = true
				}
			}
		}
		return out
	}
	// regular reports whether every one of the nodes probes k and is
	// probed by k.
	regular := func(ps map[[2]int]bool, nodes []int) bool {
		out, in := map[int]int{}, map[int]int{}
		for p := range ps {
			out[p[0]]++
			in[p[1]]++
		}
		for _, i := range nodes {
			if out[i] != k || in[i] != k {
				return false
			}
		}
		return true
	}
	var before map[[2]int]bool
	await(t, "every node probes 3 and is probed by 3", 20*time.Second, func() bool {
		before = pairs(all)
		return regular(before, all)
	})
	const leaver = 7
	rest := without(all, leaver)
	m.members(rest...)
	var after map[[2]int]bool
	await(t, "the 23 others probe 3 each and are probed by 3 each", 10*time.Second, func() bool {
		after = pairs(rest)
		return regular(after, rest)
	})
	changed := 0
	for p := range after {
		if !before[p] {
			changed++
		}
	}
	for p := range before {
		if !after[p] && p[0] != leaver {
			changed++
		}
	}
	if changed > 2*k {
		t.Fatalf("%d pairs among the others changed when one member left, more than 2k = %d", changed, 2*k)
	}
	t.Logf("%d pairs changed when one member left: the %d into it went and as many new ones came (its own %d went with it)",
		changed, k, k)
}

// TestMeshFileSD runs 4 nodes whose members come from one file_sd file:
// they probe each other by name; a node added to the file is probed by all
// within a few seconds; a file that breaks keeps the members, counted as a
// discovery failure on every node; a node taken out of the file is left
// cleanly by all.
func TestMeshFileSD(t *testing.T) {
	const nodes = 4
	b := NewBridge(t, nodes)
	m := &meshLab{b: b}
	bin := testproc.Build(t, "../../../cmd/udpprobe")
	file := filepath.Join(t.TempDir(), "members.yml") // one file system, every namespace
	list := func(nodes ...int) {
		t.Helper()
		var targets []string
		for _, i := range nodes {
			targets = append(targets, fmt.Sprintf("'%s:6464'", b.Hosts[i].Addr))
		}
		write(t, file, "- targets: ["+strings.Join(targets, ", ")+"]\n")
	}
	list(0, 1, 2)
	for i, h := range b.Hosts {
		m.nodes = append(m.nodes, b.Start(t, h, []string{"UDPPROBE_NAME=" + nodeName(i),
			"UDPPROBE_TARGETS=file:" + file, "UDPPROBE_WEB_LISTEN_ADDRESS=127.0.0.1:8466",
			"UDPPROBE_RATE=50", "UDPPROBE_LOSS_TIMEOUT=" + meshTimeout.String(), "UDPPROBE_LOG_FORMAT=json"}, bin, "mesh"))
	}
	for _, p := range m.nodes {
		p.Await(t, `"msg":"serving metrics"`)
	}
	probedBy := func(j int, by ...int) bool {
		for _, i := range by {
			if !m.probes(m.metrics(t, i), i, j) {
				return false
			}
		}
		return true
	}
	await(t, "the first three probe each other", 10*time.Second, func() bool {
		return probedBy(0, 1, 2) && probedBy(1, 0, 2) && probedBy(2, 0, 1)
	})
	list(0, 1, 2, 3)
	await(t, "everyone probes the node added to the file", 5*time.Second, func() bool { return probedBy(3, 0, 1, 2) })

	write(t, file, "- targets: ['10.77.0.1:6464'\n") // broken
	await(t, "every node counts the broken file", 5*time.Second, func() bool {
		for i := range nodes {
			s := m.metrics(t, i)
			if s[scrape.Series("udpprobe_sender_discovery_failures_total", "sender", nodeName(i), "source", "file")] < 1 {
				return false
			}
		}
		return true
	})
	for i := range nodes {
		if n := m.metrics(t, i)[scrape.Series("udpprobe_sender_targets", "sender", nodeName(i))]; n != nodes-1 {
			t.Fatalf("%s probes %v with a broken file, want the %d it had", nodeName(i), n, nodes-1)
		}
	}

	list(0, 1, 2)
	await(t, "nobody probes the node taken out of the file", 5*time.Second, func() bool {
		for i := range 3 {
			if m.probes(m.metrics(t, i), i, 3) {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * meshTimeout)
	s := m.metrics(t, 3)
	for i := range 3 {
		m.exact(t, s, i, 3)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
