package e2e

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRandomImpairmentExact sends through seeded random loss, duplication,
// corruption and reordering, and requires every exported counter to equal
// what the relay's delivery record implies, the 3-reordered among them
// (RFC 4737 section 5, by the oracle).
func TestRandomImpairmentExact(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			h := startReceiverWith(t, receiver.Options{DepthMetrics: true})
			relay := h.startRelay(impair.Config{
				Seed: seed, Drop: 0.05, Duplicate: 0.03, Corrupt: 0.02, Reorder: 0.05, ReorderDepth: 3,
			})
			const session = 0x5eed
			send(t, relay.Addr(), "random", session, 2000, time.Second)
			w, corrupted := impair.Truth(delivered(t, relay), session)
			if w.Lost == 0 || w.Duplicated == 0 || w.Reordered == 0 || corrupted == 0 || w.Received < 1500 {
				t.Fatalf("the relay did not exercise every impairment: %+v, %d corrupted", w, corrupted)
			}
			got := h.waitFor("random", w.Expected)
			h.assertCounts(got, counts{
				received: w.Received, lost: w.Lost, duplicated: w.Duplicated, reordered: w.Reordered,
				goodbyes: got.goodbyes, // 0 to 3 copies survive the relay; checked below
				gapCount: uint64(len(w.Gaps)), gapSum: sum(w.Gaps),
				extentCount: uint64(len(w.Extents)), extentSum: sum(w.Extents),
				corrupted: corrupted,
			})
			if w.Received+w.Lost != w.Expected {
				t.Fatalf("ground truth does not balance: %+v", w)
			}
			var n3 float64
			for _, n := range w.N {
				if n >= 3 {
					n3++
				}
			}
			if got := h.sample("packets_n_reordered_total", "random"); got != n3 || n3 == 0 {
				t.Errorf("%v 3-reordered, the relay's record says %v", got, n3)
			}
			t.Logf("seed %d: %d received, %d lost in %d gaps, %d duplicated, %d reordered (%v 3-reordered), %d corrupted",
				seed, w.Received, w.Lost, len(w.Gaps), w.Duplicated, w.Reordered, n3, corrupted)
		})
	}
}

// TestScriptedRestartLateGoodbye follows a sender that crashes (its goodbye
// never arrives) and restarts, with one of each impairment placed by hand.
func TestScriptedRestartLateGoodbye(t *testing.T) {
	h := startReceiver(t)
	const a, b = 0xA, 0xB
	relay := h.startRelay(impair.Config{Script: func(_ int, hd *wire.Header) impair.Action {
		switch {
		case hd == nil:
			return impair.Action{}
		case hd.Session == a && hd.Goodbye():
			return impair.Action{Drop: true} // session A "crashes"
		case hd.Session == a && hd.Seq >= 5 && hd.Seq <= 7:
			return impair.Action{Drop: true} // one loss period of 3
		case hd.Session == a && hd.Seq == 10:
			return impair.Action{Copies: 2}
		case hd.Session == a && hd.Seq == 20:
			return impair.Action{Hold: 3} // reordered, extent 3
		case hd.Session == a && hd.Seq == 30:
			return impair.Action{Delay: 3 * lossTimeout} // lost, then late
		case hd.Session == a && hd.Seq == 40:
			return impair.Action{Corrupt: true}
		case hd.Session == b && hd.Seq == 3:
			return impair.Action{Drop: true}
		}
		return impair.Action{}
	}})

	send(t, relay.Addr(), "crashy", a, 1000, 300*time.Millisecond)
	send(t, relay.Addr(), "crashy", b, 1000, 300*time.Millisecond)
	var lastA, lastB uint64
	goodbyesB := uint64(0)
	for _, d := range delivered(t, relay) {
		switch {
		case d.Session == a && !d.Goodbye && !d.Corrupted:
			lastA = max(lastA, d.Seq)
		case d.Session == b && d.Goodbye:
			lastB = d.Seq
			goodbyesB++
		}
	}
	if lastA < 50 || lastB < 10 || goodbyesB != 3 {
		t.Fatalf("sent too little to cover the script: A up to %d, B up to %d, %d goodbyes", lastA, lastB, goodbyesB)
	}
	// Session A: 5 6 7 dropped, 30 late (lost), 40 corrupted (lost); no goodbye,
	// so its range ends at the highest delivered. Session B: 3 dropped.
	lostA, lostB := uint64(5), uint64(1)
	want := counts{
		received:   lastA + 1 - lostA + lastB + 1 - lostB,
		lost:       lostA + lostB,
		duplicated: 2, reordered: 1, late: 1, restarts: 1, goodbyes: 3,
		gapCount: 4, gapSum: lostA + lostB,
		extentCount: 1, extentSum: 3,
		corrupted: 1,
	}
	h.waitFor("crashy", lastA+1+lastB+1)
	time.Sleep(3 * lossTimeout) // the late datagram of A is still in the relay
	got := h.counts("crashy")
	h.assertCounts(got, want)
}

// TestTwoTargetsOneReceiver: a sender given the receiver twice, directly
// and through a clean relay, is two paths at the receiver, each exact; the
// datagrams of one never count as duplicates of the other's.
func TestTwoTargetsOneReceiver(t *testing.T) {
	h := startReceiver(t)
	relay := h.startRelay(impair.Config{})
	direct := h.rcv.Addr().String()
	sm := sendWith(t, sender.Options{Targets: []string{direct, relay.Addr()}, Name: "twice", Rate: 200}, time.Second)
	var relayed uint64
	for _, d := range delivered(t, relay) {
		if d.Valid && !d.Goodbye {
			relayed++
		}
	}
	want := map[string]uint64{direct: sm.packets, relay.Addr(): relayed}
	if sm.packets < 150 || relayed < 150 {
		t.Fatalf("sent %d directly and %d through the relay in a second at 200/s", sm.packets, relayed)
	}
	for target, n := range want {
		got := func(name string) uint64 {
			s, err := scrape.Gather(h.reg)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := s.Value(scrape.Series("udpprobe_receiver_"+name, "sender", "twice", "target", target))
			return uint64(v)
		}
		waitUntil(t, "every datagram to "+target+" is in", func() bool { return got("packets_received_total") >= n })
		if r, d, l := got("packets_received_total"), got("packets_duplicated_total"), got("packets_lost_total"); r != n || d != 0 || l != 0 {
			t.Errorf("to %s: %d received, %d duplicated, %d lost; want %d, 0 and 0", target, r, d, l, n)
		}
	}
	if n := h.sample("peers", ""); n != 2 {
		t.Errorf("%v peers, want 2", n)
	}
}
