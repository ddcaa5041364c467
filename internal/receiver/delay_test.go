package receiver

import (
	"math"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// TestDelayGate: with a bound of 10 ms, a one-way delay is recorded only
// while both clocks say they are synchronised and their maximum errors add
// up to at most 10 ms, and never when it is negative; every other first
// copy counts as unsynchronised. Until the table is told its own clock's
// state, the clock is taken as unsynchronised.
func TestDelayGate(t *testing.T) {
	tt := newTable(t, Options{DelayMaxError: 10 * time.Millisecond})
	if got := tt.sample(t, "one_way_delay_max_error_seconds", ""); got != 0.01 {
		t.Fatalf("bound exported as %v s, want 0.01", got)
	}
	b := make([]byte, 104)
	seq := uint64(0)
	send := func(synced bool, maxErr time.Duration, delay time.Duration) {
		t.Helper()
		sent := int64(seq) * int64(10*time.Millisecond)
		h := wire.Header{Name: []byte("alpha"), Target: []byte(testTarget), Session: 1, Seq: seq,
			SendTime: wall0 + sent, SendClock: sent, Clock: uint16(stamp.Estimate(synced, maxErr))}
		if err := wire.Encode(b, &h); err != nil {
			t.Fatal(err)
		}
		tt.handle(b, Instant{Wall: wall0 + sent + int64(delay), Mono: sent + int64(delay)})
		seq++
	}
	ms := time.Millisecond
	// 7.8125 ms is 2^-7 s, which an error estimate holds exactly; this
	// host's 2.1875 ms makes the two add up to the bound.
	const exact, host = 7812500 * time.Nanosecond, 2187500 * time.Nanosecond
	for _, step := range []struct {
		what              string
		hostSynced        bool
		hostErr           time.Duration // 0: the host's state not given yet
		synced            bool
		maxErr, delay     time.Duration
		recorded, ignored float64 // totals after the step
	}{
		{"the session's first datagram, on probation: counted nowhere yet", false, 0, true, ms, 5 * ms, 0, 0},
		{"the session confirmed; this host's clock not known yet", false, 0, true, ms, 5 * ms, 0, 2},
		{"both synchronised, 2.1875 + 5 ms", true, host, true, 5 * ms, 5 * ms, 1, 2},
		{"both synchronised, 2.1875 + 7.8125 ms: at the bound", true, host, true, exact, 5 * ms, 2, 2},
		{"both synchronised, 2.1875 + 7.8126 ms: past it", true, host, true, exact + 100*time.Nanosecond, 5 * ms, 2, 3},
		{"the sender not synchronised", true, host, false, ms, 5 * ms, 2, 4},
		{"this host not synchronised", false, host, true, ms, 5 * ms, 2, 5},
		{"both synchronised, and it arrived before it was sent", true, host, true, ms, -ms, 2, 6},
		{"both synchronised again", true, host, true, ms, 7 * ms, 3, 6},
	} {
		if step.hostErr > 0 {
			tt.SetClock(step.hostSynced, step.hostErr)
		}
		send(step.synced, step.maxErr, step.delay)
		n, ignored := tt.sample(t, "one_way_delay_seconds_count", "alpha"), tt.sample(t, "one_way_delay_unsynchronised_total", "alpha")
		if n != step.recorded || ignored != step.ignored {
			t.Fatalf("%s: %v delays recorded and %v not, want %v and %v", step.what, n, ignored, step.recorded, step.ignored)
		}
	}
	if sum := tt.sample(t, "one_way_delay_seconds_sum", "alpha"); math.Abs(sum-0.017) > 1e-12 {
		t.Errorf("recorded delays sum to %v s, want 0.017 (5, 5 and 7 ms)", sum)
	}

	off := newTable(t, Options{})
	if got := off.sample(t, "one_way_delay_max_error_seconds", ""); !math.IsInf(got, 1) {
		t.Errorf("without a bound it is exported as %v, want +Inf", got)
	}
}
