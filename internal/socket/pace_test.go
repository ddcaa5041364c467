package socket

import (
	"testing"
	"time"
)

// TestHold: the pause after a read that emptied the socket shrinks fourfold
// when more than the budget queued up since the last pause, down to the
// floor, doubles back when little did, up to the maximum, which scales with
// the granted buffer.
func TestHold(t *testing.T) {
	p := NewPacer(2 << 20)
	if p.max != MaxHold/2 || p.hold != p.max || p.budget != 1<<20 {
		t.Fatalf("a 2 MiB buffer holds up to %v from %v with a budget of %d; want %v and 1 MiB", p.max, p.hold, p.budget, MaxHold/2)
	}
	const datagram = 60 // bytes, + skbOverhead each
	for _, step := range []struct {
		datagrams int
		want      time.Duration
	}{
		{p.budget/(datagram+skbOverhead) + 1, MaxHold / 8},
		{p.budget / 2 / (datagram + skbOverhead), MaxHold / 8}, // within the band: unchanged
		{p.budget/(datagram+skbOverhead) + 1, MaxHold / 32},
		{10 * p.budget / (datagram + skbOverhead), MaxHold / 128},
		{10 * p.budget / (datagram + skbOverhead), minHold},
		{10 * p.budget / (datagram + skbOverhead), minHold},
		{p.budget/8/(datagram+skbOverhead) - 1, 2 * minHold},
		{0, 4 * minHold},
	} {
		for range step.datagrams {
			p.Queue(datagram)
		}
		if got := p.Next(); got != step.want || p.hold != got || p.queued != 0 {
			t.Fatalf("after %d datagrams the hold is %v (queued %d), want %v", step.datagrams, got, p.queued, step.want)
		}
	}
	for range 20 {
		p.Next()
	}
	if p.hold != p.max {
		t.Fatalf("an idle reader holds %v, want the maximum %v", p.hold, p.max)
	}
}
