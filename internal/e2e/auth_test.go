package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
)

var (
	oldKey = []byte("the key being retired, 32 bytes!")
	newKey = []byte("the key taking over, 32 bytes!!!")
)

// TestAuthentication: a receiver with a key counts every datagram of a
// sender without it, or with another key, as an auth invalid (goodbyes
// included) and nothing else; a sender with the key is counted exactly,
// and its replies, signed, are accepted.
func TestAuthentication(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true, Keys: [][]byte{oldKey}})
	target := h.rcv.Addr().String()
	auth := h.m.Invalid.WithLabelValues(metrics.ReasonAuth)
	var rejected float64
	for name, keys := range map[string][][]byte{"nokey": nil, "wrongkey": {newKey}} {
		sm := sendWith(t, sender.Options{Targets: []string{target}, Name: name, Rate: 200, Keys: keys},
			300*time.Millisecond)
		sent := float64(sm.packets)
		rejected += sent + sender.GoodbyeCopies
		if sent < 20 {
			t.Fatalf("%s: %v sent", name, sent)
		}
		waitUntil(t, "every datagram is rejected", func() bool { return testutil.ToFloat64(auth) == rejected })
	}
	sm := sendWith(t, sender.Options{Targets: []string{target}, Name: "keyed", Rate: 200, RoundTrip: true,
		Keys: [][]byte{oldKey}}, 300*time.Millisecond)
	sent := sm.packets
	got := h.waitFor("keyed", sent)
	h.assertCounts(got, counts{received: sent, goodbyes: sender.GoodbyeCopies})
	if n := sm.rt.Answered; n != sent {
		t.Errorf("%v of %d replies accepted by the sender", n, sent)
	}
	if n := sm.rt.Invalid; n != 0 {
		t.Errorf("%v replies rejected by the sender", n)
	}
	if got := testutil.ToFloat64(auth); got != rejected {
		t.Errorf("%v auth invalids, want %v", got, rejected)
	}
	for _, reason := range metrics.InvalidReasons {
		if n := testutil.ToFloat64(h.m.Invalid.WithLabelValues(reason)); reason != metrics.ReasonAuth && n != 0 {
			t.Errorf("%v invalids for %s", n, reason)
		}
	}
	if n := h.sample("peers", ""); n != 1 {
		t.Errorf("%v peers, want only the sender with the key", n)
	}
}

// TestKeyRotation: a receiver that accepts the old and the new key loses
// nothing while one sender, restarted, moves from the old key to the new
// and another keeps the old one throughout.
func TestKeyRotation(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Keys: [][]byte{newKey, oldKey}})
	target := h.rcv.Addr().String()
	var wg sync.WaitGroup
	var steadySent uint64
	wg.Go(func() {
		sm := sendWith(t, sender.Options{Targets: []string{target}, Name: "steady", Rate: 200,
			Keys: [][]byte{oldKey}}, 600*time.Millisecond)
		steadySent = sm.packets
	})
	var movingSent uint64
	for session, keys := range [][][]byte{{oldKey}, {newKey, oldKey}} {
		sm := sendWith(t, sender.Options{Targets: []string{target}, Name: "moving", Session: uint64(session + 1),
			Rate: 200, Keys: keys}, 300*time.Millisecond)
		movingSent += sm.packets
	}
	wg.Wait()
	// Goodbyes are counted for the receiver: the three sessions' together.
	moving, steady := h.waitFor("moving", movingSent), h.waitFor("steady", steadySent)
	h.assertCounts(moving, counts{received: movingSent, restarts: 1, goodbyes: 3 * sender.GoodbyeCopies})
	h.assertCounts(steady, counts{received: steadySent, goodbyes: 3 * sender.GoodbyeCopies})
	if n := testutil.ToFloat64(h.m.Invalid.WithLabelValues(metrics.ReasonAuth)); n != 0 {
		t.Errorf("%v auth invalids during the rotation", n)
	}
}
