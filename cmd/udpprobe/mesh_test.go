package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestMeshOnLoopback runs three mesh nodes on loopback, each given all
// three addresses: every node learns the others' names by hello, probes
// them under those names (never itself), counts and reflects their probes,
// and measures the round trips, all over one socket and one HTTP endpoint;
// stopped, every one of the six pairs is exact: received what its sender
// sent, nothing lost, and every round trip answered. Each node probes from
// three flows (UDPPROBE_FLOWS): flow 0 from the node's one socket, flows 1
// and 2 from sockets of their own, whose replies the node reads itself, so
// a round trip of theirs would be lost if it did not.
func TestMeshOnLoopback(t *testing.T) {
	clearEnv(t)
	bin := testproc.Build(t, ".")
	const nodes, flows = 3, 3
	var udp, web, names []string
	for i := range nodes {
		udp = append(udp, testproc.FreeAddr(t, "udp"))
		web = append(web, testproc.FreeAddr(t, "tcp"))
		names = append(names, fmt.Sprintf("node-%d", i))
	}
	var procs []*testproc.Process
	for i := range nodes {
		procs = append(procs, testproc.Start(t, []string{
			"UDPPROBE_LISTEN_ADDRESS=" + udp[i], "UDPPROBE_WEB_LISTEN_ADDRESS=" + web[i], "UDPPROBE_NAME=" + names[i],
			"UDPPROBE_TARGETS=" + strings.Join(udp, ","), "UDPPROBE_RATE=150", "UDPPROBE_LOSS_TIMEOUT=200ms",
			fmt.Sprintf("UDPPROBE_FLOWS=%d", flows), "UDPPROBE_LOG_FORMAT=json"}, bin, "mesh"))
	}
	for _, p := range procs {
		p.Await(t, `"msg":"serving metrics"`)
	}
	sent := func(m scrape.Samples, from, to string) float64 {
		return m[scrape.Series("udpprobe_sender_packets_sent_total", "sender", from, "target", to)]
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ready := true
		for i := range nodes {
			m := metricsAt(t, web[i])
			for j := range nodes {
				if i != j && sent(m, names[i], names[j]) == 0 {
					ready = false
				}
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the nodes did not all probe each other by name within 10 s")
		}
	}
	time.Sleep(500 * time.Millisecond)
	for i := range nodes {
		m := metricsAt(t, web[i])
		if n := m[scrape.Series("udpprobe_sender_targets", "sender", names[i])]; n != nodes-1 {
			t.Errorf("%s probes %v targets, want %d", names[i], n, nodes-1)
		}
		if _, ok := m[scrape.Series("udpprobe_sender_packets_sent_total", "sender", names[i], "target", names[i])]; ok {
			t.Errorf("%s probes itself", names[i])
		}
		for j := range nodes {
			if i == j {
				continue
			}
			rt := func(name string) float64 {
				return m[scrape.Series("udpprobe_sender_"+name, "sender", names[i], "target", names[j])]
			}
			if rt("replies_received_total") == 0 || rt("roundtrip_packets_lost_total") != 0 {
				t.Errorf("%s → %s: %v replies, %v round trips lost; want some and none", names[i], names[j],
					rt("replies_received_total"), rt("roundtrip_packets_lost_total"))
			}
		}
	}
	// Each node stopped in turn says goodbye; the nodes still running
	// have counted its stream to its end: everything it sent them was
	// received once, in order, and nothing is lost.
	for i := range nodes {
		if code := procs[i].Stop(t); code != exitOK {
			t.Fatalf("%s exit %d", names[i], code)
		}
		for j := i + 1; j < nodes; j++ {
			peer := func(name string) float64 {
				return metricsAt(t, web[j])[scrape.Series("udpprobe_receiver_"+name, "sender", names[i], "target", names[j])]
			}
			for deadline := time.Now().Add(5 * time.Second); peer("session_ended") != 1; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%s never saw %s's goodbye", names[j], names[i])
				}
			}
			time.Sleep(400 * time.Millisecond) // two loss timeouts: the stream is settled
			m := metricsAt(t, web[j])
			if peer("packets_received_total") == 0 || peer("packets_lost_total") != 0 || peer("packets_duplicated_total") != 0 ||
				peer("packets_reordered_total") != 0 || peer("peer_restarts_total") != 0 {
				t.Errorf("%s's stream at %s: %v received, %v lost, %v duplicated, %v reordered, %v restarts",
					names[i], names[j], peer("packets_received_total"), peer("packets_lost_total"),
					peer("packets_duplicated_total"), peer("packets_reordered_total"), peer("peer_restarts_total"))
			}
			// Every flow arrived, and the flows add up to the pair.
			var sum float64
			for f := range flows {
				flow := func(name string) float64 {
					return m[scrape.Series("udpprobe_receiver_flow_packets_"+name, "sender", names[i], "target", names[j],
						"flow", fmt.Sprint(f))]
				}
				if flow("received_total") == 0 || flow("lost_total") != 0 {
					t.Errorf("%s's flow %d at %s: %v received, %v lost; want some and none", names[i], f, names[j],
						flow("received_total"), flow("lost_total"))
				}
				sum += flow("received_total")
			}
			if sum != peer("packets_received_total") {
				t.Errorf("%s's flows at %s add up to %v received, the pair to %v", names[i], names[j], sum,
					peer("packets_received_total"))
			}
		}
	}
}
