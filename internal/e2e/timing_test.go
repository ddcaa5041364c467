package e2e

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/oracle"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// TestFixedDelay puts 20 ms on each direction. Every datagram must have a
// one-way delay and come back in time, and the means must match what the
// relay's own record says the path took: the relay notes when each datagram
// reached it (kernel timestamp) and when it sent it on, so for each
// datagram it knows the hold up, the hold down (at least 20 ms each, more if
// its timer woke late) and the receiver's turnaround between them. What it
// cannot see is the sender's write and the last loopback hops, each
// microseconds on an idle machine: the measured means may exceed the
// relay's by at most 1 ms, and may not fall short of them (by more than
// 0.1 ms of clock reading). Deriving the bound from the record, rather than
// from the nominal 40 ms, keeps a loaded machine's late timers out of it.
func TestFixedDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	h := startReceiverWith(t, receiver.Options{Reflect: true})
	relay := h.startRelay(impair.Config{Delay: delay}, impair.Config{Delay: delay})
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "delayed", Rate: 100, RoundTrip: true},
		time.Second)
	n, sum := uint64(h.sample("one_way_delay_seconds_count", "delayed")), h.sample("one_way_delay_seconds_sum", "delayed")
	sent := float64(sm.packets)
	if sent < 50 || float64(n) != sent {
		t.Fatalf("%v sent, %d one-way delays recorded: every datagram should have one", sent, n)
	}
	rn, rsum := sm.rttN, sm.rttSum
	if float64(rn) != sent || float64(sm.rt.Answered) != sent || sm.rt.Lost != 0 {
		t.Fatalf("%v sent, %d round trips, %v lost: every datagram should come back in time",
			sent, rn, sm.rt.Lost)
	}
	if skew := h.sample("one_way_delay_unsynchronised_total", "delayed"); skew != 0 {
		t.Errorf("%v delays not recorded on one host, with no bound", skew)
	}

	// The relay's account, per probe: hold up, then turnaround and hold down.
	up := map[uint64]impair.Delivery{}
	for _, d := range relay.Delivered() {
		if d.Valid && !d.Goodbye {
			up[d.Seq] = d
		}
	}
	var oneWay, roundTrip time.Duration
	var replies int
	for _, d := range relay.Returned() {
		u, ok := up[d.Seq]
		if !ok || !d.Valid || d.Goodbye {
			continue
		}
		upHold, downHold := u.At.Sub(u.Arrived), d.At.Sub(d.Arrived)
		if upHold < delay || downHold < delay {
			t.Fatalf("seq %d held %v up and %v down, less than %v", d.Seq, upHold, downHold, delay)
		}
		oneWay += upHold
		roundTrip += upHold + d.Arrived.Sub(u.At) + downHold
		replies++
	}
	if len(up) != int(n) || replies != int(rn) {
		t.Fatalf("the relay passed %d probes and %d replies; %d one-way delays and %d round trips were measured",
			len(up), replies, n, rn)
	}
	check := func(what string, measured, relayed time.Duration) {
		t.Helper()
		if measured < relayed-100*time.Microsecond || measured > relayed+time.Millisecond {
			t.Errorf("%s mean %v, the relay's record says %v (want up to 1 ms more)", what, measured, relayed)
		}
	}
	owd, rtt := time.Duration(sum/float64(n)*1e9), time.Duration(rsum/float64(rn)*1e9)
	check("one-way delay", owd, oneWay/time.Duration(n))
	check("round-trip time", rtt, roundTrip/time.Duration(rn))
	t.Logf("%v datagrams: one-way delay mean %v (relay %v), round-trip mean %v (relay %v)",
		sent, owd, oneWay/time.Duration(n), rtt, roundTrip/time.Duration(rn))
}

// TestAlternatingDelayJitter delays datagrams by 10 and 30 ms in turn, 50 ms
// apart so that none is reordered: every |D| is 20 ms, and RFC 3550's
// estimator, starting at 0 with gain g = 1/16, reaches 20 ms · (1 − (1−g)^n)
// after n samples. If every |D| lies within 20 ms ± δ, the estimate lies in
// [(20 ms − δ)(1 − (1−g)^n), 20 ms + δ]. δ is measured from the relay's own
// record (its timers' error), plus one loopback write (1 ms, generously)
// between the relay's clock and the receiver's kernel timestamp.
func TestAlternatingDelayJitter(t *testing.T) {
	h := startReceiver(t)
	relay := h.startRelay(impair.Config{Script: func(i int, hd *wire.Header) impair.Action {
		if hd == nil || hd.Goodbye() {
			return impair.Action{}
		}
		if hd.Seq%2 == 0 {
			return impair.Action{Delay: 10 * time.Millisecond}
		}
		return impair.Action{Delay: 30 * time.Millisecond}
	}})
	send(t, relay.Addr(), "jittery", 0x71, 20, 4*time.Second) // 50 ms apart: 30 ms to spare
	var data []impair.Delivery
	for _, d := range delivered(t, relay) {
		if d.Valid && !d.Goodbye {
			data = append(data, d)
		}
	}
	const want = 20 * time.Millisecond
	var delta time.Duration
	for i := 1; i < len(data); i++ {
		a, b := data[i-1], data[i]
		if b.Seq != a.Seq+1 {
			t.Fatalf("the relay reordered or lost %d → %d; the interval is too short for this test", a.Seq, b.Seq)
		}
		d := (b.At.Sub(a.At) - time.Duration(b.SendClock-a.SendClock)).Abs()
		delta = max(delta, (d - want).Abs())
	}
	const hop = time.Millisecond
	c := h.waitFor("jittery", uint64(len(data)))
	if c.received != uint64(len(data)) || c.lost != 0 || c.reordered != 0 {
		t.Fatalf("receiver counts %+v for %d clean datagrams", c, len(data))
	}
	samples := float64(len(data) - 1)
	ipdv := uint64(h.sample("ipdv_seconds_count", "jittery"))
	if float64(ipdv) != samples {
		t.Errorf("%d IPDV samples, want %v (every pair is consecutive)", ipdv, samples)
	}
	got := time.Duration(h.sample("jitter_seconds", "jittery") * 1e9)
	lo := time.Duration(float64(want-delta-hop) * (1 - math.Pow(15.0/16, samples)))
	hi := want + delta + hop
	if got < lo || got > hi {
		t.Fatalf("jitter %v after %v samples, want within [%v, %v] (relay timer error δ = %v)", got, samples, lo, hi, delta)
	}
	t.Logf("jitter %v after %v samples; bounds [%v, %v], δ = %v", got, samples, lo, hi, delta)
}

// TestPDVRelay: the relay holds every tenth probe 30 ms and passes the
// others at once. Each probe's PDV is its delay less the least delay of
// the run (one interval, ended a waiting time after the goodbye), so the
// PDV histogram's buckets must hold exactly the probes the relay's record
// puts there: its own holds, less the least of them, within the loopback
// hops it cannot see (well under the millisecond kept clear of every
// bucket bound).
func TestPDVRelay(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{DepthMetrics: true})
	relay := h.startRelay(impair.Config{Script: func(i int, hd *wire.Header) impair.Action {
		if hd != nil && !hd.Goodbye() && hd.Seq%10 == 5 {
			return impair.Action{Delay: 30 * time.Millisecond}
		}
		return impair.Action{}
	}})
	send(t, relay.Addr(), "varied", 0x72, 100, time.Second)
	var holds []time.Duration
	for _, d := range delivered(t, relay) {
		if d.Valid && !d.Goodbye {
			holds = append(holds, d.At.Sub(d.Arrived))
		}
	}
	least := slices.Min(holds)
	waitUntil(t, "every probe's PDV is observed", func() bool {
		n, ok := h.value("pdv_seconds_count", "varied")
		return ok && n == float64(len(holds))
	})
	s := h.gather()
	for _, le := range []float64{.01, .025, .05} {
		bound := time.Duration(le * 1e9)
		var want float64
		for _, hold := range holds {
			pdv := hold - least
			if (pdv - bound).Abs() < time.Millisecond {
				t.Fatalf("the relay held a probe %v more than the least: within 1 ms of the %v bucket bound, too close to tell", pdv, bound)
			}
			if pdv <= bound {
				want++
			}
		}
		got, _ := s.Sum("udpprobe_receiver_pdv_seconds_bucket", "sender", "varied", "le", strconv.FormatFloat(le, 'g', -1, 64))
		if got != want {
			t.Errorf("%v PDV observations up to %v, the relay's record says %v", got, bound, want)
		}
	}
}

// TestClockAwareDelay: the sender's clock state travels in every datagram
// and the receiver weighs it with its own. With a bound of 10 ms and a
// receiver whose kernel says synchronised within 1 ms, a sender
// synchronised within 2 ms has every delay recorded; one whose clock is
// not synchronised, or synchronised within 9.5 ms (10.5 ms together),
// has none, each datagram counted instead.
func TestClockAwareDelay(t *testing.T) {
	state := func(synced bool, maxErr time.Duration) func() (bool, time.Duration, error) {
		return func() (bool, time.Duration, error) { return synced, maxErr, nil }
	}
	h := startReceiverWith(t, receiver.Options{DelayMaxError: 10 * time.Millisecond, ClockState: state(true, time.Millisecond)})
	for _, c := range []struct {
		name     string
		clock    func() (bool, time.Duration, error)
		recorded bool
	}{
		{"synchronised", state(true, 2*time.Millisecond), true},
		{"unsynchronised", state(false, 2*time.Millisecond), false},
		{"loose", state(true, 9500*time.Microsecond), false},
	} {
		sm := sendWith(t, sender.Options{Targets: []string{h.rcv.Addr().String()}, Name: c.name, Rate: 100, ClockState: c.clock}, 500*time.Millisecond)
		got := h.waitFor(c.name, sm.packets)
		n, ignored := h.sample("one_way_delay_seconds_count", c.name), h.sample("one_way_delay_unsynchronised_total", c.name)
		want, wantIgnored := float64(sm.packets), 0.0
		if !c.recorded {
			want, wantIgnored = 0, float64(sm.packets)
		}
		if got.received != sm.packets || n != want || ignored != wantIgnored {
			t.Errorf("%s sender: %d sent, %d received, %v delays recorded and %v not; want %v and %v",
				c.name, sm.packets, got.received, n, ignored, want, wantIgnored)
		}
	}
}

// TestOutage: the relay drops every datagram for 1.5 s (numbers 125 to
// 274 at 100 a second). The receiver must see one loss period, as long by
// the sender's clock as the relay's record says (the send clocks of 124
// and 275, which it delivered), and within one send interval of how long
// the relay itself saw nothing pass; and the unavailable seconds its own
// record implies: the seconds of the send clock in which more than half
// the datagrams were dropped (two: 75 of 100 in each).
func TestOutage(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{DepthMetrics: true})
	var mu sync.Mutex
	sent := map[uint64]int64{} // every data datagram's send clock, delivered or not
	relay := h.startRelay(impair.Config{Script: func(_ int, hd *wire.Header) impair.Action {
		if hd == nil || hd.Goodbye() {
			return impair.Action{}
		}
		mu.Lock()
		sent[hd.Seq] = hd.SendClock
		mu.Unlock()
		return impair.Action{Drop: hd.Seq >= 125 && hd.Seq <= 274}
	}})
	send(t, relay.Addr(), "outage", 0x73, 100, 4*time.Second)
	at := map[uint64]impair.Delivery{}
	for _, d := range delivered(t, relay) {
		if d.Valid && !d.Goodbye {
			at[d.Seq] = d
		}
	}
	before, after := at[124], at[275]
	if before.Seq != 124 || after.Seq != 275 {
		t.Fatalf("the relay did not deliver 124 and 275: %+v, %+v", before, after)
	}
	mu.Lock()
	n := uint64(len(sent))
	perSecond := map[int64][2]int{} // sent, dropped
	for seq, c := range sent {
		k := perSecond[c/1e9]
		k[0]++
		if seq >= 125 && seq <= 274 {
			k[1]++
		}
		perSecond[c/1e9] = k
	}
	mu.Unlock()
	var unavailable float64
	for _, k := range perSecond {
		if 2*k[1] > k[0] {
			unavailable++
		}
	}
	c := h.waitFor("outage", n)
	if c.lost != 150 {
		t.Fatalf("%d lost, want the 150 dropped (%+v)", c.lost, c)
	}
	periods, span := h.sample("loss_period_seconds_count", "outage"), h.sample("loss_period_seconds_sum", "outage")
	want := float64(after.SendClock-before.SendClock) / 1e9
	if periods != 1 || span != want {
		t.Errorf("%v loss periods spanning %v s, want 1 spanning %v s (send clocks of 124 and 275)", periods, span, want)
	}
	seen := after.Arrived.Sub(before.Arrived).Seconds()
	if math.Abs(span-seen) > 0.010 {
		t.Errorf("the loss period spans %v s by the sender's clock, the relay saw nothing pass for %v s: more than a send interval apart", span, seen)
	}
	if got := h.sample("unavailable_seconds_total", "outage"); got != unavailable || unavailable != 2 {
		t.Errorf("%v unavailable seconds, the relay's record implies %v (want 2)", got, unavailable)
	}
}

// dataSeqs returns the distinct data sequence numbers among deliveries.
func dataSeqs(ds []impair.Delivery) map[uint64]bool {
	seqs := map[uint64]bool{}
	for _, d := range ds {
		if d.Valid && !d.Goodbye {
			seqs[d.Seq] = true
		}
	}
	return seqs
}

// TestLossSplitByDirection drops datagrams only upstream, then only
// downstream, and requires the sender's round-trip loss, and its split,
// to equal what the relay dropped in each direction.
func TestLossSplitByDirection(t *testing.T) {
	// Seeded drops of a tenth of the data; the goodbye and its replies get
	// through, so the tail of the session is split too.
	dropTenth := func(seed uint64) impair.Config {
		rng := rand.New(rand.NewPCG(seed, 0))
		return impair.Config{Script: func(_ int, hd *wire.Header) impair.Action {
			if hd == nil || hd.Goodbye() {
				return impair.Action{}
			}
			return impair.Action{Drop: rng.Float64() < 0.1}
		}}
	}
	for _, tc := range []struct {
		name     string
		up, down impair.Config
	}{
		{"upstream", dropTenth(7), impair.Config{}},
		{"downstream", impair.Config{}, dropTenth(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startReceiverWith(t, receiver.Options{Reflect: true})
			relay := h.startRelay(tc.up, tc.down)
			sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "split", Rate: 200, RoundTrip: true},
				time.Second)
			sent := sm.packets
			up := dataSeqs(relay.Delivered())  // probes that reached the receiver
			back := dataSeqs(relay.Returned()) // replies that reached the sender
			wantUp, wantDown := sent-uint64(len(up)), uint64(len(up)-len(back))
			if rt := sm.rt; rt.Lost != wantUp+wantDown || rt.Upstream != wantUp ||
				rt.Downstream != wantDown || rt.Answered != uint64(len(back)) {
				t.Fatalf("sender: round trip lost %d (upstream %d, downstream %d), %d replies; "+
					"relay: %d sent, %d dropped up, %d dropped down",
					rt.Lost, rt.Upstream, rt.Downstream, rt.Answered, sent, wantUp, wantDown)
			}
			if wantUp+wantDown == 0 || (wantUp != 0 && wantDown != 0) {
				t.Fatalf("the relay dropped %d up and %d down; want drops in one direction only", wantUp, wantDown)
			}
			if sm.rt.Late != 0 || sm.rt.Invalid != 0 {
				t.Fatalf("late %d, invalid %d replies on loopback", sm.rt.Late, sm.rt.Invalid)
			}
			t.Logf("%d sent: %d lost upstream, %d downstream", sent, wantUp, wantDown)
		})
	}
}

// TestLossSplitReordered drops and reorders datagrams on both paths at
// once (a tenth of the data dropped, a fifth held behind two later
// datagrams, each way), which the count a reply carries cannot split:
// the receiver's numbered replies and its own loss count (protocol
// version 5) split the sender's round-trip loss exactly as the relay
// dropped it. The goodbyes and their replies get through, so the tail is
// split too.
func TestLossSplitReordered(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true})
	relay := h.startRelay(impair.DataOnly(11, 10, 5), impair.DataOnly(12, 10, 5))
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "both", Rate: 200, RoundTrip: true},
		2*time.Second)
	up := dataSeqs(relay.Delivered())
	back := dataSeqs(relay.Returned())
	wantUp, wantDown := sm.packets-uint64(len(up)), uint64(len(up)-len(back))
	want := tracker.RoundTripCounts{Answered: uint64(len(back)), Lost: wantUp + wantDown, Upstream: wantUp, Downstream: wantDown}
	if sm.rt != want {
		t.Fatalf("sender: %+v\nrelay: %d sent, %d dropped up, %d dropped down", sm.rt, sm.packets, wantUp, wantDown)
	}
	if wantUp == 0 || wantDown == 0 || reorderedAcrossLoss(relay.Delivered()) == 0 {
		t.Fatalf("the relay dropped %d up and %d down, and reordered %d across a loss; want all of them",
			wantUp, wantDown, reorderedAcrossLoss(relay.Delivered()))
	}
	t.Logf("%d sent: %d lost upstream, %d downstream; %d probes arrived after one sent later that was lost",
		sm.packets, wantUp, wantDown, reorderedAcrossLoss(relay.Delivered()))
}

// reorderedAcrossLoss counts the data datagrams delivered after a higher
// sequence number such that some number between the two was never
// delivered: the reordering a count cannot split across.
func reorderedAcrossLoss(ds []impair.Delivery) (n int) {
	seen := dataSeqs(ds)
	var highest uint64
	for _, d := range ds {
		if !d.Valid || d.Goodbye {
			continue
		}
		if d.Seq < highest {
			for s := d.Seq + 1; s < highest; s++ {
				if !seen[s] {
					n++
					break
				}
			}
		}
		highest = max(highest, d.Seq)
	}
	return n
}

// TestTrafficClassKept sends with DSCP 46 and ECT(1) over loopback, to a
// receiver on IPv4 and one on IPv6, from the sender's one dual-stack
// socket: every datagram arrives as it was marked (nothing on loopback
// remarks, marks or bleaches), and the receiver read that from each one,
// which the traffic-class series, exported only then, show.
func TestTrafficClassKept(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			h := startReceiverWith(t, receiver.Options{ListenAddress: listen})
			sm := sendWith(t, sender.Options{Targets: []string{h.rcv.Addr().String()}, Name: "marked", Rate: 200,
				TrafficClass: 46<<2 | 1}, 300*time.Millisecond)
			c := h.waitFor("marked", sm.packets)
			if c.received != sm.packets || c.lost != 0 {
				t.Fatalf("received %d, lost %d of %d", c.received, c.lost, sm.packets)
			}
			for _, name := range []string{"packets_remarked_total", "packets_ce_marked_total", "packets_ecn_bleached_total"} {
				if v, ok := h.value(name, "marked"); !ok || v != 0 {
					t.Errorf("%s = %v (exported: %v); want 0, exported", name, v, ok)
				}
			}
		})
	}
}

// TestFirstDatagramsLost: the relay drops a session's first two
// datagrams. The session is young (its send clock says so), so the
// receiver counts them lost, exactly as the relay dropped them, though it
// never saw the session before, and the sender counts them upstream.
func TestFirstDatagramsLost(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true})
	relay := h.startRelay(impair.Config{Script: func(_ int, hd *wire.Header) impair.Action {
		return impair.Action{Drop: hd != nil && !hd.Goodbye() && hd.Seq < 2}
	}}, impair.Config{})
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "first", Rate: 200, RoundTrip: true},
		300*time.Millisecond)
	c := h.waitFor("first", sm.packets)
	if c.lost != 2 || c.received != sm.packets-2 {
		t.Fatalf("receiver: lost %d, received %d of %d sent; want the first 2 lost", c.lost, c.received, sm.packets)
	}
	if rt := sm.rt; rt.Lost != 2 || rt.Upstream != 2 || rt.Downstream != 0 {
		t.Fatalf("sender: %+v; want 2 lost upstream", rt)
	}
}

// TestIPv6Relay: the whole chain over IPv6, the sender's dual-stack
// socket, the relay and the receiver on ::1, with loss and reordering
// both ways: the receiver's counts and the sender's split equal the
// relay's record, as over IPv4.
func TestIPv6Relay(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true, ListenAddress: "[::1]:0"})
	relay, err := impair.New("[::1]:0", h.rcv.Addr().String(), impair.DataOnly(21, 10, 5), impair.DataOnly(22, 10, 5))
	if err != nil {
		t.Fatal(err)
	}
	relay.Start()
	t.Cleanup(func() { relay.Close() })
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "six", Rate: 200, RoundTrip: true},
		time.Second)
	up, back := dataSeqs(relay.Delivered()), dataSeqs(relay.Returned())
	wantUp, wantDown := sm.packets-uint64(len(up)), uint64(len(up)-len(back))
	want := tracker.RoundTripCounts{Answered: uint64(len(back)), Lost: wantUp + wantDown, Upstream: wantUp, Downstream: wantDown}
	if sm.rt != want {
		t.Fatalf("sender: %+v\nrelay: %d sent, %d dropped up, %d dropped down", sm.rt, sm.packets, wantUp, wantDown)
	}
	if c := h.waitFor("six", sm.packets); c.received != uint64(len(up)) || c.lost != wantUp {
		t.Fatalf("receiver: received %d, lost %d; the relay delivered %d of %d", c.received, c.lost, len(up), sm.packets)
	}
	if wantUp == 0 || wantDown == 0 || !strings.HasPrefix(relay.Addr(), "[::1]:") {
		t.Fatalf("relay at %s dropped %d up and %d down: want IPv6 and drops both ways", relay.Addr(), wantUp, wantDown)
	}
	t.Logf("over IPv6: %d sent, %d lost upstream, %d downstream, as the relay dropped them", sm.packets, wantUp, wantDown)
}

// TestFlowsRelay: a sender probing one target from 4 flows, with round
// trips, through a relay that drops every fifth datagram of flow 2 alone
// (a bad ECMP member, as one flow sees it). The receiver counts each flow
// exactly as the relay's record says, together under the pair's series and
// apart under the flows'; the sender's round trips add up over its flows,
// and each flow's datagrams come from a port of their own.
func TestFlowsRelay(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{Reflect: true})
	relay := h.startRelay(impair.Config{Script: func(_ int, hd *wire.Header) impair.Action {
		if hd == nil || hd.Goodbye() {
			return impair.Action{}
		}
		return impair.Action{Drop: hd.Flow == 2 && hd.Seq%5 == 4}
	}})
	sm := sendWith(t, sender.Options{Targets: []string{relay.Addr()}, Name: "flows", Rate: 400, Flows: 4, RoundTrip: true}, time.Second)
	per, last := map[uint16][]uint64{}, map[uint16]int64{}
	for _, d := range delivered(t, relay) {
		switch {
		case d.Valid && d.Goodbye:
			last[d.Flow] = int64(d.Seq)
		case d.Valid:
			per[d.Flow] = append(per[d.Flow], d.Seq)
		}
	}
	if len(per) != 4 {
		t.Fatalf("the relay saw flows %v, want 4", per)
	}
	var received, lost uint64
	s := h.gather()
	for flow := range uint16(4) {
		l, ok := last[flow]
		if !ok {
			t.Fatalf("flow %d's goodbyes were all lost", flow)
		}
		w := oracle.Classify(per[flow], l)
		received, lost = received+w.Received, lost+w.Lost
		f := strconv.Itoa(int(flow))
		got, _ := s.Sum("udpprobe_receiver_flow_packets_received_total", "sender", "flows", "flow", f)
		gotLost, _ := s.Sum("udpprobe_receiver_flow_packets_lost_total", "sender", "flows", "flow", f)
		if got != float64(w.Received) || gotLost != float64(w.Lost) || (flow == 2) != (w.Lost > 0) {
			t.Errorf("flow %d: received %v, lost %v; the relay's record says %d and %d", flow, got, gotLost, w.Received, w.Lost)
		}
	}
	c := h.waitFor("flows", received+lost)
	if c.received != received || c.lost != lost {
		t.Errorf("the pair: received %d, lost %d; the flows together %d and %d", c.received, c.lost, received, lost)
	}
	if sm.packets != received+lost || sm.rt.Lost != lost || sm.rt.Answered != received {
		t.Errorf("the sender sent %d, %d round trips answered and %d lost; want %d, %d and %d (upstream %d)",
			sm.packets, sm.rt.Answered, sm.rt.Lost, received+lost, received, lost, sm.rt.Upstream)
	}
}
