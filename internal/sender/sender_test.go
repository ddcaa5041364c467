package sender

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/testkit/fakeclock"
	"github.com/udpprobe/udpprobe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is where the tests' fake clocks start.
var t0 = time.Unix(1_700_000_000, 0)

// sent is one datagram a fakeOut took: its header and destination.
type sent struct {
	wire.Header
	to netip.AddrPort
}

// fakeOut takes batches one datagram at a time, as the kernel does,
// failing or stalling on demand, and records them and the batch sizes.
type fakeOut struct {
	clock   *fakeclock.Clock
	mu      sync.Mutex
	writes  int                       // datagrams tried
	fail    func(n int) bool          // the n-th datagram (from 0) is refused
	stall   func(n int) time.Duration // the n-th datagram takes this long on the clock
	cost    time.Duration             // what one call takes on the clock
	batches []int
	got     []sent
}

func (o *fakeOut) Write(bufs [][]byte, to []netip.AddrPort) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches = append(o.batches, len(bufs))
	o.clock.Advance(o.cost)
	for i, b := range bufs {
		n := o.writes
		o.writes++
		if o.stall != nil {
			o.clock.Advance(o.stall(n))
		}
		if o.fail != nil && o.fail(n) {
			return i, errors.New("no route to host")
		}
		var h wire.Header
		if err := wire.Decode(b, &h); err != nil {
			return i, err
		}
		h.Name, h.Target = []byte(string(h.Name)), []byte(string(h.Target)) // b is reused
		o.got = append(o.got, sent{h, to[i]})
	}
	return len(bufs), nil
}

// data returns the data datagrams (not goodbyes) sent to label, in order.
func (o *fakeOut) data(label string) (hs []wire.Header) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.got {
		if string(s.Target) == label && !s.Goodbye() {
			hs = append(hs, s.Header)
		}
	}
	return hs
}

// goodbyes returns the goodbyes sent to label.
func (o *fakeOut) goodbyes(label string) (hs []wire.Header) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.got {
		if string(s.Target) == label && s.Goodbye() {
			hs = append(hs, s.Header)
		}
	}
	return hs
}

// newSender is a sender writing to a fakeOut on a fake clock, with the
// given options' targets applied; its registry is returned too.
func newSender(t testing.TB, opts Options) (*Sender, *fakeOut, *prometheus.Registry) {
	t.Helper()
	return newSenderWith(t, opts, metrics.ClassicAndNative)
}

// newSenderWith is newSender with histograms exposed as h says.
func newSenderWith(t testing.TB, opts Options, h metrics.Histograms) (*Sender, *fakeOut, *prometheus.Registry) {
	t.Helper()
	clk := fakeclock.New(t0)
	reg := prometheus.NewPedanticRegistry()
	opts.Rate = cmpOr(opts.Rate, 1000)
	opts.PayloadSize = cmpOr(opts.PayloadSize, 128)
	opts.LossTimeout = cmpOr(opts.LossTimeout, 100*time.Millisecond)
	opts.Name = "me"
	opts.Logger = cmpOr(opts.Logger, zap.NewNop())
	opts.Metrics, opts.Clock = metrics.NewSender(reg, "me", h), clk
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	out := &fakeOut{clock: clk}
	s.out = out
	s.apply(s.next, clk.Now())
	s.changed.Store(false)
	t.Cleanup(func() { s.conn.Close() })
	return s, out, reg
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// run runs s until its clock has moved on by d, then lets Run end.
func run(t testing.TB, s *Sender, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := s.clock.(*fakeclock.Clock)
	clk.At(clk.Now().Add(d), cancel)
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// contiguous fails unless the datagrams are numbered 0, 1, 2, … in one
// session.
func contiguous(t *testing.T, label string, hs []wire.Header) {
	t.Helper()
	for i, h := range hs {
		if h.Seq != uint64(i) || h.Session != hs[0].Session {
			t.Fatalf("%s: datagram %d is sequence %d of session %d", label, i, h.Seq, h.Session)
		}
	}
}

// TestSendErrorsUseNoSequenceNumber: every other datagram is refused, yet
// the datagrams that left carry 0, 1, 2, … without a hole, and the
// goodbyes carry the last of them.
func TestSendErrorsUseNoSequenceNumber(t *testing.T) {
	s, out, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9"}})
	out.fail = func(n int) bool { return n%2 == 1 }
	tg := s.active["127.0.0.1:9"]
	for range 20 {
		s.batch.w, s.batch.bufs = tg.w, append(s.batch.bufs, tg.buf(0))
		s.batch.to = append(s.batch.to, tg.to)
		s.batch.of = append(s.batch.of, tg)
		s.batch.dues = append(s.batch.dues, 0)
		s.flush()
	}
	s.goodbye(tg)
	if got := float64(tg.sentAll()); got != 10 {
		t.Errorf("sent %v, want 10", got)
	}
	if got := testutil.ToFloat64(tg.m.SendErrors); got != 10+1 { // one goodbye write fails too
		t.Errorf("send errors %v, want 11", got)
	}
	data, byes := out.data(tg.label), out.goodbyes(tg.label)
	contiguous(t, tg.label, data)
	if len(data) != 10 || len(byes) != GoodbyeCopies-1 || byes[0].Seq != 9 || byes[1].Seq != 9 ||
		data[0].Session != s.Session() {
		t.Fatalf("data %d, goodbyes %v", len(data), byes)
	}
}

func TestNoGoodbyeWithoutData(t *testing.T) {
	s, out, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9"}})
	s.goodbye(s.active["127.0.0.1:9"])
	if len(out.got) != 0 {
		t.Fatalf("sent %d datagrams", len(out.got))
	}
}

// TestStallSkipsSlots: a write that blocks for 100 ms at 1000/s leaves the
// sender more than the catch-up window behind, so it skips and counts slots
// instead of bursting them, and numbers stay contiguous. Slot 10 is sent
// 10 ms after the first and the write returns at 110 ms: slot 11 is 99 ms
// late, 20 ms of which the catch-up window absorbs, so 79 slots are
// skipped.
func TestStallSkipsSlots(t *testing.T) {
	s, out, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9"}})
	out.stall = func(n int) time.Duration {
		if n == 10 {
			return 100 * time.Millisecond
		}
		return 0
	}
	tg := s.active["127.0.0.1:9"]
	first := time.Duration(tg.sched.due(0)) // since the epoch, t0
	run(t, s, first+300*time.Millisecond+500*time.Microsecond)
	if missed := testutil.ToFloat64(s.opts.Metrics.MissedSlots); missed != 79 {
		t.Errorf("missed %v slots, want 79", missed)
	}
	data := out.data(tg.label)
	contiguous(t, tg.label, data)
	// Slots 0 to 300 are due in 300 ms; 79 were skipped.
	if len(data) != 301-79 {
		t.Errorf("%d datagrams sent, want %d", len(data), 301-79)
	}
}

// TestNewRejectsRate: a sender cannot run without a rate its schedule can
// keep, whoever configured it.
func TestNewRejectsRate(t *testing.T) {
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1), 2e9} {
		_, err := New(Options{Targets: []string{"127.0.0.1:9"}, Rate: rate, PayloadSize: 80, Name: "me",
			Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative)})
		if err == nil || !strings.Contains(err.Error(), "rate") {
			t.Errorf("rate %v: error %v, want one about the rate", rate, err)
		}
	}
}

// TestNewRejectsOversizeDatagrams: a payload over what UDP carries is
// refused for any target, a STAMP one (whose test packets take any size
// from their base up) too.
func TestNewRejectsOversizeDatagrams(t *testing.T) {
	for _, target := range []string{"127.0.0.1:9", "stamp://127.0.0.1:862"} {
		_, err := New(Options{Targets: []string{target}, Rate: 1, PayloadSize: wire.MaxSize + 1, Name: "me",
			Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative)})
		if err == nil || !strings.Contains(err.Error(), target) {
			t.Errorf("target %q: error %v, want one naming it", target, err)
		}
	}
}

func TestNewFailsOnBadTarget(t *testing.T) {
	for _, target := range []string{"no-such-host.invalid:1", "127.0.0.1", "127.0.0.1:0"} {
		_, err := New(Options{Targets: []string{target}, Rate: 1, PayloadSize: 80, Name: "me",
			Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative)})
		if err == nil || !strings.Contains(err.Error(), target) {
			t.Errorf("target %q: error %v, want one naming it", target, err)
		}
	}
}

// TestSchedule: a batch holds the due slot and the later slots already due,
// never one whose time has not come, and never more than a batch or than
// asked; slots more than the catch-up window behind are skipped, exactly.
func TestSchedule(t *testing.T) {
	for _, rate := range []float64{10, 1e3, 3e4, 1e5, 3e5, 1e6} {
		for _, k := range []int64{0, 1, 7, 12345} {
			for _, after := range []time.Duration{0, 1, time.Microsecond, 10 * time.Microsecond, 333 * time.Microsecond, 15 * time.Millisecond} {
				for _, most := range []int{1, 5, MaxBatch} {
					s := newSchedule(0, rate)
					s.next = k
					now := s.due(k) + int64(after)
					dues, skipped := s.take(now, most, nil)
					if skipped != 0 || len(dues) == 0 || len(dues) > most || dues[0] != s.due(k) {
						t.Fatalf("rate %v, slot %d, now +%v, most %d: dues %v, %d skipped", rate, k, after, most, dues, skipped)
					}
					for i, d := range dues {
						if d != s.due(k+int64(i)) || d > now {
							t.Fatalf("rate %v, slot %d, now +%v: entry %d is %v, want slot %d's due time %v, not after %v",
								rate, k, after, i, d, k+int64(i), s.due(k+int64(i)), now)
						}
					}
					if next := s.due(s.next); s.next != k+int64(len(dues)) || len(dues) < most && next <= now {
						t.Fatalf("rate %v, slot %d, now +%v: %d slots, but the next (%v) is due too", rate, k, after, len(dues), next)
					}
				}
			}
		}
	}
	for _, c := range []struct {
		rate    float64
		behind  time.Duration // past slot 0's due time
		skipped int64
		batch   int
	}{
		{1000, 20 * time.Millisecond, 0, MaxBatch},                      // the catch-up window: nothing skipped
		{1000, 20*time.Millisecond + 999*time.Microsecond, 0, MaxBatch}, // less than an interval beyond it
		{1000, 21 * time.Millisecond, 1, MaxBatch},
		{1000, 120 * time.Millisecond, 100, MaxBatch},
		{10, 150 * time.Millisecond, 0, 2},    // a 100 ms interval is its own window: slots 0 and 1
		{10, 250 * time.Millisecond, 1, 2},    // slot 0 skipped; 1 and 2 due
		{1e6, time.Second, 980_000, MaxBatch}, // a second behind: one batch, not a burst
	} {
		s := newSchedule(0, c.rate)
		dues, skipped := s.take(int64(c.behind), MaxBatch, nil)
		if skipped != c.skipped || len(dues) != c.batch || dues[0] != s.due(c.skipped) {
			t.Errorf("rate %v, %v behind: %d skipped, a batch of %d from %v; want %d skipped and %d from slot %d",
				c.rate, c.behind, skipped, len(dues), time.Duration(dues[0]), c.skipped, c.batch, c.skipped)
		}
	}
}

// TestRefusalInBatch: the kernel refuses the third datagram of a batch of
// five to one target, amid datagrams to another. It uses no sequence
// number, the ones after it are renumbered and sent, and every slot is
// accounted for once.
func TestRefusalInBatch(t *testing.T) {
	s, out, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9", "127.0.0.2:9"}, Rate: 1e5})
	out.fail = func(n int) bool { return n == 2 }
	a, b := s.active["127.0.0.1:9"], s.active["127.0.0.2:9"]
	used := map[*target]int{}
	for _, tg := range []*target{a, a, a, a, a, b, b} {
		s.batch.w, s.batch.bufs = tg.w, append(s.batch.bufs, tg.buf(used[tg]))
		used[tg]++
		s.batch.to = append(s.batch.to, tg.to)
		s.batch.of = append(s.batch.of, tg)
		s.batch.dues = append(s.batch.dues, 0)
	}
	s.flush()
	if got, errs := float64(a.sentAll()), testutil.ToFloat64(a.m.SendErrors); got != 4 || errs != 1 {
		t.Errorf("sent %v with %v errors, want 4 and 1", got, errs)
	}
	var lateness dto.Metric
	if err := s.opts.Metrics.ScheduleLateness.(prometheus.Metric).Write(&lateness); err != nil {
		t.Fatal(err)
	}
	if c := lateness.GetHistogram().GetSampleCount(); c != 7 {
		t.Errorf("lateness observed %d times, want 7 (one per slot of either target)", c)
	}
	if len(out.batches) != 2 || out.batches[0] != 7 || out.batches[1] != 4 {
		t.Errorf("batches %v, want [7 4]", out.batches)
	}
	contiguous(t, a.label, out.data(a.label))
	contiguous(t, b.label, out.data(b.label))
	if a.seq != 4 || b.seq != 2 || len(out.got) != 6 {
		t.Fatalf("next sequences %d and %d after %d datagrams, want 4 and 2 after 6", a.seq, b.seq, len(out.got))
	}
}

// TestHighRateBatches: at 100,000 datagrams/s, with each write call taking
// 25 µs, the sender batches the slots its wake-ups find due and keeps up,
// numbers stay contiguous, and no datagram is stamped before its slot
// (slot ≥ sequence number, skipped slots only add).
func TestHighRateBatches(t *testing.T) {
	s, out, _ := newSender(t, Options{Targets: []string{"127.0.0.1:9"}, Rate: 1e5})
	out.cost = 25 * time.Microsecond
	tg := s.active["127.0.0.1:9"]
	run(t, s, 100*time.Millisecond)
	data := out.data(tg.label)
	contiguous(t, tg.label, data)
	for _, h := range data {
		if due := tg.sched.due(int64(h.Seq)); h.SendClock < due {
			t.Fatalf("sequence %d stamped at %v, before its slot at %v", h.Seq, time.Duration(h.SendClock), due)
		}
	}
	largest := 0
	for _, n := range out.batches {
		largest = max(largest, n)
	}
	if len(data) < 1000 || largest < 2 || largest > MaxBatch {
		t.Fatalf("%d datagrams in batches of up to %d; want batches of 2 to %d", len(data), largest, MaxBatch)
	}
	if missed := testutil.ToFloat64(s.opts.Metrics.MissedSlots); missed != 0 {
		t.Fatalf("%v slots missed; a sender whose writes keep up misses none", missed)
	}
}

// TestManyTargetsOneLoop: 200 targets at 100/s each from one loop, for a
// second: every target gets exactly its slots, numbered from 0 in its own
// session, to its own address, none skipped; targets due together share a
// write (each write takes 100 µs here, so they do); no goroutine is
// started per target.
func TestManyTargetsOneLoop(t *testing.T) {
	var entries []string
	for i := range 200 {
		entries = append(entries, fmt.Sprintf("127.0.%d.%d:6464", i/250, 1+i%250))
	}
	core, logs := observer.New(zap.InfoLevel)
	s, out, _ := newSender(t, Options{Targets: entries, Rate: 100, Logger: zap.New(core)})
	out.cost = 100 * time.Microsecond // a write per datagram would not keep up
	goroutines := runtime.NumGoroutine()
	var during int
	s.clock.(*fakeclock.Clock).At(t0.Add(500*time.Millisecond), func() { during = runtime.NumGoroutine() })
	run(t, s, time.Second)
	if during > goroutines {
		t.Errorf("%d goroutines while sending to 200 targets, %d before", during, goroutines)
	}
	var sent uint64
	for _, e := range entries {
		data := out.data(e)
		sent += uint64(len(data))
		contiguous(t, e, data)
		// Slots at phase, phase + 10 ms, … up to a second: 100, the last
		// of which may still wait for a write when the run stops.
		if n := len(data); n < 99 || n > 100 {
			t.Errorf("%s: %d datagrams in a second at 100/s", e, n)
		}
		if len(out.goodbyes(e)) != GoodbyeCopies {
			t.Errorf("%s: %d goodbyes", e, len(out.goodbyes(e)))
		}
	}
	for _, d := range out.got {
		if d.to.String() != string(d.Target) {
			t.Fatalf("a datagram for %s went to %v", d.Target, d.to)
		}
	}
	if missed := testutil.ToFloat64(s.opts.Metrics.MissedSlots); missed != 0 {
		t.Errorf("%v slots missed", missed)
	}
	// The run's last line counts what every target was sent.
	end := logs.FilterMessage("sending stopped").All()
	if len(end) != 1 || end[0].ContextMap()["sent"] != sent || end[0].ContextMap()["targets"] != int64(200) {
		t.Errorf("last lines %v, want one saying %d sent to 200 targets", end, sent)
	}
	if len(out.batches) >= len(out.got) || len(out.batches) < len(out.got)/10 {
		t.Errorf("%d datagrams in %d writes: want targets due together to share some", len(out.got), len(out.batches))
	}
}

// TestSetTargets: while the sender runs, a target that joins is probed
// within the idle wait, one that leaves gets its goodbyes and loses its
// series once its round trips are settled, and one that comes back starts
// a new session from 0; the others notice nothing.
func TestSetTargets(t *testing.T) {
	s, out, reg := newSender(t, Options{Targets: []string{"127.0.0.1:9", "127.0.0.2:9"}, RoundTrip: true})
	clk := s.clock.(*fakeclock.Clock)
	a, b, c := discovery.Target{Label: "127.0.0.1:9", Addr: netip.MustParseAddrPort("127.0.0.1:9")},
		discovery.Target{Label: "127.0.0.2:9", Addr: netip.MustParseAddrPort("127.0.0.2:9")},
		discovery.Target{Label: "c:9", Addr: netip.MustParseAddrPort("127.0.0.3:9")}
	clk.At(t0.Add(200*time.Millisecond), func() { s.SetTargets([]discovery.Target{a, c}) })    // b leaves, c joins
	clk.At(t0.Add(600*time.Millisecond), func() { s.SetTargets([]discovery.Target{a, b, c}) }) // b is back
	var seriesOfB int
	clk.At(t0.Add(500*time.Millisecond), func() {
		n, err := testutil.GatherAndCount(reg, "udpprobe_sender_packets_sent_total")
		if err != nil {
			t.Error(err)
		}
		seriesOfB = n - 2
	})
	run(t, s, time.Second)

	dataA := out.data(a.Label)
	contiguous(t, a.Label, dataA)
	if len(dataA) < 999 || len(dataA) > 1001 || len(out.goodbyes(a.Label)) != GoodbyeCopies {
		t.Errorf("a, probed throughout: %d datagrams, %d goodbyes", len(dataA), len(out.goodbyes(a.Label)))
	}
	dataC := out.data(c.Label)
	contiguous(t, c.Label, dataC)
	if first := dataC[0].SendClock; first < int64(200*time.Millisecond) || first > int64(200*time.Millisecond+maxIdle+time.Millisecond) {
		t.Errorf("c joined at 200 ms and was first probed at %v", time.Duration(first))
	}
	dataB := out.data(b.Label)
	var first, second []wire.Header
	for _, h := range dataB {
		if h.Session == dataB[0].Session {
			first = append(first, h)
		} else {
			second = append(second, h)
		}
	}
	contiguous(t, b.Label, first)
	contiguous(t, b.Label, second)
	if len(first) == 0 || len(second) == 0 || first[len(first)-1].SendClock > int64(200*time.Millisecond+maxIdle) {
		t.Fatalf("b: %d datagrams before it left, %d after it came back", len(first), len(second))
	}
	byes := out.goodbyes(b.Label)
	if len(byes) != 2*GoodbyeCopies || byes[0].Seq != first[len(first)-1].Seq || byes[0].Session != first[0].Session {
		t.Errorf("b's goodbyes %v, want %d of each session, the first ending at %d", byes, GoodbyeCopies, first[len(first)-1].Seq)
	}
	if seriesOfB != 0 {
		t.Errorf("b's series were still there 300 ms after it left (loss timeout 100 ms): %d", seriesOfB)
	}
	if n := testutil.ToFloat64(s.opts.Metrics.Targets); n != 3 {
		t.Errorf("udpprobe_sender_targets %v, want 3", n)
	}
}

// discard takes every datagram and keeps nothing.
type discard struct{}

func (discard) Write(bufs [][]byte, _ []netip.AddrPort) (int, error) { return len(bufs), nil }

// echo answers every datagram at once as a reflecting receiver that lost
// nothing would: the reply carries the count of datagrams up to its own.
type echo struct {
	s     *Sender
	reply []byte
}

func (e *echo) Write(bufs [][]byte, to []netip.AddrPort) (int, error) {
	mono := int64(e.s.clock.Now().Sub(e.s.epoch))
	for i, b := range bufs {
		r := e.reply[:len(b)]
		copy(r, b)
		seq := binary.BigEndian.Uint64(b[16:]) // wire.PutSeq's place
		wire.MakeReply(r, counts(seq+1))
		e.s.HandleReply(r, to[i], mono)
	}
	return len(bufs), nil
}

// BenchmarkSendLoop: the sending loop's cost per datagram, on the fake
// clock and without the kernel, for one target and for a thousand sharing
// the same aggregate rate (10,000/s). One op is a millisecond of the
// schedule: ten datagrams.
//
// With reply=echo every datagram comes straight back as a receiver that
// lost nothing would reply, through HandleReply: the reply path's cost
// too, which with many targets is where their memory is cold; with the
// round-trip histograms exposed with classic buckets and native ones, or
// native ones alone (as the bench's fan-out runs and the DaemonSet have
// them).
func BenchmarkSendLoop(b *testing.B) {
	for _, c := range []struct {
		targets int
		rate    float64
		echo    bool
		native  bool
	}{{1, 10000, false, false}, {1000, 10, false, false},
		{1, 10000, true, false}, {1000, 10, true, false}, {1, 10000, true, true}, {1000, 10, true, true}} {
		name, h := fmt.Sprintf("targets=%d", c.targets), metrics.ClassicAndNative
		switch {
		case c.native:
			name, h = name+"/reply=echo/histograms=native", metrics.NativeOnly
		case c.echo:
			name += "/reply=echo/histograms=classic"
		}
		b.Run(name, func(b *testing.B) {
			var entries []string
			for i := range c.targets {
				entries = append(entries, fmt.Sprintf("127.0.%d.%d:6464", 1+i/250, 1+i%250))
			}
			s, _, _ := newSenderWith(b, Options{Targets: entries, Rate: c.rate, RoundTrip: true}, h)
			var w writer = discard{}
			if c.echo {
				w = &echo{s: s, reply: make([]byte, wire.MaxSize)}
			}
			s.out = w
			for _, t := range s.active {
				t.w = w // each had the fakeOut newSender gave it
			}
			b.ReportAllocs()
			b.ResetTimer()
			run(b, s, time.Duration(b.N)*time.Millisecond)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.sent), "ns/datagram")
			if c.echo {
				var answered uint64
				for _, t := range s.active { // none leaves
					answered += t.roundTrips().Answered
				}
				if answered != s.sent {
					b.Fatalf("%d round trips answered of %d sent", answered, s.sent)
				}
			}
		})
	}
}
