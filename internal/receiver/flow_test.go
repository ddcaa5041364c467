package receiver

import (
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// flowProbe is datagram seq of flow of session 1 from alpha, sent at seq
// ms; bye makes it the session's goodbye.
func flowProbe(t *testing.T, flow uint16, seq uint64, bye bool) []byte {
	t.Helper()
	b := make([]byte, 104)
	h := wire.Header{Name: []byte("alpha"), Target: []byte(testTarget), Session: 1, Seq: seq, Flow: flow,
		SendTime: wall0 + int64(seq)*1e6, SendClock: int64(seq) * 1e6}
	if bye {
		h.Flags = wire.FlagGoodbye
	}
	if err := wire.Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFlows: a sender's flows to one target are streams of their own,
// each numbered from 0, counted together in the pair's series and apart
// in the per-flow ones; a sender of one flow has none of those; the
// flows' streams all expire with the pair.
func TestFlows(t *testing.T) {
	tt := newTable(t, Options{})
	for seq := range uint64(100) {
		for flow := range uint16(3) {
			if flow == 1 && seq >= 10 && seq < 15 {
				continue // flow 1's path drops 5
			}
			tt.handle(flowProbe(t, flow, seq, false), at(float64(seq)))
		}
	}
	for flow := range uint16(3) {
		tt.handle(flowProbe(t, flow, 99, true), at(100))
	}
	tt.Housekeep(at(1000)) // past the waiting time: every stream settled
	if tt.Len() != 3 {
		t.Fatalf("%d streams' peers in the table, want the 3 flows", tt.Len())
	}
	want := map[string]float64{
		"packets_received_total": 295, "packets_lost_total": 5, "peers": 1,
	}
	for name, v := range want {
		peer := "alpha"
		if name == "peers" {
			peer = ""
		}
		if got := tt.sample(t, name, peer); got != v {
			t.Errorf("%s %v, want %v", name, got, v)
		}
	}
	s, err := scrape.Gather(tt.reg)
	if err != nil {
		t.Fatal(err)
	}
	for flow, w := range [][2]float64{{100, 0}, {95, 5}, {100, 0}} {
		f := string(rune('0' + flow))
		rcv, _ := s.Value(scrape.Series("udpprobe_receiver_flow_packets_received_total", "sender", "alpha", "target", testTarget, "flow", f))
		lost, _ := s.Value(scrape.Series("udpprobe_receiver_flow_packets_lost_total", "sender", "alpha", "target", testTarget, "flow", f))
		if rcv != w[0] || lost != w[1] {
			t.Errorf("flow %s: received %v, lost %v; want %v and %v", f, rcv, lost, w[0], w[1])
		}
	}

	// One flow: no per-flow series.
	one := newTable(t, Options{})
	for seq := range uint64(10) {
		one.handle(flowProbe(t, 0, seq, false), at(float64(seq)))
	}
	s1, err := scrape.Gather(one.reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, n := s1.Sum("udpprobe_receiver_flow_packets_received_total"); n != 0 {
		t.Errorf("a sender of one flow has %d per-flow series", n)
	}
	if got := one.sample(t, "packets_received_total", "alpha"); got != 10 {
		t.Errorf("the one-flow sender: %v received, want 10", got)
	}

	// The pair expires with its last flow.
	tt.Housekeep(at(float64(2 * time.Hour / time.Millisecond)))
	if tt.Len() != 0 || len(tt.groups) != 0 {
		t.Fatalf("%d peers and %d groups left after the expiry", tt.Len(), len(tt.groups))
	}
	if _, ok := tt.value(t, "packets_received_total", "alpha"); ok {
		t.Error("the pair's series outlived its flows")
	}
}

// TestFlowExpires: a flow gone silent for the peer expiry leaves the
// table and takes its per-flow series along, while the pair's, kept by
// the flows still sending, stay: forged flow numbers cannot pile up
// series.
func TestFlowExpires(t *testing.T) {
	tt := newTable(t, Options{PeerExpiry: time.Minute})
	for seq := range uint64(10) {
		tt.handle(flowProbe(t, 0, seq, false), at(float64(seq)))
		tt.handle(flowProbe(t, 7, seq, false), at(float64(seq)))
	}
	flows := func() int {
		s, err := scrape.Gather(tt.reg)
		if err != nil {
			t.Fatal(err)
		}
		_, n := s.Sum("udpprobe_receiver_flow_packets_received_total")
		return n
	}
	if n := flows(); n != 2 {
		t.Fatalf("%d per-flow series, want flows 0 and 7", n)
	}
	// Flow 0 goes on; flow 7 is silent for the expiry.
	for seq := uint64(10); seq < 20; seq++ {
		tt.handle(flowProbe(t, 0, seq, false), at(float64(50_000+seq)))
	}
	tt.Housekeep(at(61_000))
	if tt.Len() != 1 {
		t.Fatalf("%d peers left, want flow 0's", tt.Len())
	}
	if n := flows(); n != 1 {
		t.Errorf("%d per-flow series after flow 7 expired, want flow 0's", n)
	}
	if got := tt.sample(t, "packets_received_total", "alpha"); got != 30 {
		t.Errorf("the pair received %v, want 30 (its counts keep what flow 7 had)", got)
	}
}
