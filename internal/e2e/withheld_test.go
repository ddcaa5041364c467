package e2e

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// TestWithheldRepliesAreNotLoss: a round-trip sender at 2,000/s against a
// reflector at its default limit, 1,000 replies a second. The replies it
// holds back are withheld at the sender, exactly as many as its limiter
// counted, and no round trip is lost in either direction.
func TestWithheldRepliesAreNotLoss(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true, ReflectRate: 1000})
	sm := sendWith(t, sender.Options{Targets: []string{h.rcv.Addr().String()}, Name: "fast", Rate: 2000,
		RoundTrip: true}, time.Second)
	limited := uint64(h.sample("replies_rate_limited_total", "fast"))
	if limited < 500 {
		t.Fatalf("the limiter held back %d replies of about 2,000 at twice its rate", limited)
	}
	rt := sm.rt
	if rt.Withheld != limited || rt.Lost != 0 || rt.Upstream != 0 || rt.Downstream != 0 ||
		rt.Answered+rt.Withheld != sm.packets {
		t.Fatalf("sender's round trips %+v of %d sent; want %d withheld, the rest answered, none lost",
			rt, sm.packets, limited)
	}
}

// TestWithheldAndLostReplies: the same through the relay, which drops
// every tenth reply on the way back: downstream loss is exactly the
// replies it dropped, withheld exactly the limiter's count.
func TestWithheldAndLostReplies(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true, ReflectRate: 1000})
	var dropped atomic.Uint64
	relay := h.startRelay(impair.Config{}, impair.Config{Script: func(i int, hd *wire.Header) impair.Action {
		if hd != nil && !hd.Goodbye() && i%10 == 9 {
			dropped.Add(1)
			return impair.Action{Drop: true}
		}
		return impair.Action{}
	}})
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "fast", Rate: 2000, RoundTrip: true},
		time.Second)
	limited := uint64(h.sample("replies_rate_limited_total", "fast"))
	rt := sm.rt
	if dropped.Load() < 50 || limited < 500 {
		t.Fatalf("the relay dropped %d replies and the limiter held back %d: too few to tell", dropped.Load(), limited)
	}
	if rt.Withheld != limited || rt.Downstream != dropped.Load() || rt.Upstream != 0 || rt.Lost != rt.Downstream ||
		rt.Answered+rt.Withheld+rt.Lost != sm.packets {
		t.Fatalf("sender's round trips %+v of %d sent; want %d withheld and %d lost downstream",
			rt, sm.packets, limited, dropped.Load())
	}
}
