package tracker

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/udpprobe/udpprobe/internal/testkit/oracle"
)

const ms = int64(time.Millisecond)

// recorder is a Sink that keeps what it is told.
type recorder struct {
	lost        uint64
	gaps        []uint64
	spans       []int64
	unavailable uint64
}

func (r *recorder) Lost(n uint64) { r.lost += n }
func (r *recorder) Gap(length uint64, span int64) {
	r.gaps = append(r.gaps, length)
	r.spans = append(r.spans, span)
}
func (r *recorder) Unavailable() { r.unavailable++ }

// script runs a whitespace-separated list of steps against a tracker whose
// clock starts at 0 and advances 1 ms after each datagram:
//
//	N       a datagram with sequence number N
//	+N      the clock advances N ms
//	exp     Expire at the current time
//	bye:N   a goodbye announcing N as the last sequence number
//	settle  Settle
//
// It returns one letter per datagram: r received, o reordered, d duplicated,
// l late, s stray, with R for a resync, and the extents of reordered
// datagrams.
func script(t *testing.T, tr *Tracker, steps string) (outcomes string, extents []uint64) {
	t.Helper()
	var now int64
	var b strings.Builder
	for _, step := range strings.Fields(steps) {
		switch {
		case step == "exp":
			tr.Expire(now)
		case step == "settle":
			tr.Settle()
		case strings.HasPrefix(step, "+"):
			now += mustInt(t, step[1:]) * ms
		case strings.HasPrefix(step, "bye:"):
			tr.Goodbye(uint64(mustInt(t, step[4:])), now)
		default:
			r := tr.Observe(uint64(mustInt(t, step)), now)
			now += ms
			letter := map[Outcome]string{Received: "r", Reordered: "o", Duplicated: "d", Late: "l", Stray: "s"}[r.Outcome]
			if r.Resync {
				letter = "R"
			}
			b.WriteString(letter)
			if r.Outcome == Reordered {
				extents = append(extents, r.Extent)
			}
		}
	}
	return b.String(), extents
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("bad step %q", s)
	}
	return n
}

func TestTracker(t *testing.T) {
	for _, tc := range []struct {
		name     string
		window   uint64
		resync   uint64
		steps    string
		outcomes string
		extents  []uint64
		gaps     []uint64
		want     Counts // Expected included; Gaps is checked against gaps
	}{
		{
			name: "in order", steps: "0 1 2 3 4", outcomes: "rrrrr",
			want: Counts{Received: 5, Expected: 5},
		},
		{
			name: "loss waits for the timeout", steps: "0 1 3 +98 exp", outcomes: "rrr",
			want: Counts{Received: 3, Expected: 4},
		},
		{
			name: "loss settled at the deadline", steps: "0 1 3 +99 exp", outcomes: "rrr",
			gaps: []uint64{1}, want: Counts{Received: 3, Lost: 1, Expected: 4},
		},
		{
			name: "reordered just before the deadline", steps: "0 1 3 +98 2", outcomes: "rrro",
			extents: []uint64{1}, want: Counts{Received: 4, Reordered: 1, Expected: 4},
		},
		{
			name: "late at the deadline stays lost", steps: "0 1 3 +99 2", outcomes: "rrrl",
			gaps: []uint64{1}, want: Counts{Received: 3, Lost: 1, Late: 1, Expected: 4},
		},
		{
			name: "copy of a late datagram is a duplicate", steps: "0 2 +150 1 1", outcomes: "rrld",
			gaps: []uint64{1}, want: Counts{Received: 2, Lost: 1, Late: 1, Duplicated: 1, Expected: 3},
		},
		{
			name: "duplicates", steps: "0 1 1 2 2 2 0", outcomes: "rrdrddd",
			want: Counts{Received: 3, Duplicated: 4, Expected: 3},
		},
		{
			name: "reordering extent is counted in arrivals", steps: "0 3 4 5 1 2", outcomes: "rrrroo",
			extents: []uint64{3, 4}, want: Counts{Received: 6, Reordered: 2, Expected: 6},
		},
		{
			name: "loss periods are maximal runs", steps: "0 3 4 8 9 +200 exp", outcomes: "rrrrr",
			gaps: []uint64{2, 3}, want: Counts{Received: 5, Lost: 5, Expected: 10},
		},
		{
			name: "a reordered arrival splits a gap", steps: "0 5 2 +200 exp", outcomes: "rro",
			extents: []uint64{1}, gaps: []uint64{1, 2}, want: Counts{Received: 3, Lost: 3, Reordered: 1, Expected: 6},
		},
		{
			name: "adjacent gaps revealed separately join", steps: "0 2 4 +200 exp 3 1", outcomes: "rrrll",
			gaps: []uint64{1, 1}, want: Counts{Received: 3, Lost: 2, Late: 2, Expected: 5},
		},
		{
			name: "mid-stream start counts nothing before it", steps: "1000 1001 1003 +200 exp", outcomes: "rrr",
			gaps: []uint64{1}, want: Counts{Received: 3, Lost: 1, Expected: 4},
		},
		{
			name: "datagram before the first one extends the stream", steps: "1 0 2", outcomes: "ror",
			extents: []uint64{1}, want: Counts{Received: 3, Reordered: 1, Expected: 3},
		},
		{
			name: "extension leaves its own gap", steps: "5 6 2 3 +200 exp 4", outcomes: "rrool",
			extents: []uint64{2, 3}, gaps: []uint64{1},
			want: Counts{Received: 4, Lost: 1, Reordered: 2, Late: 1, Expected: 5},
		},
		{
			name: "before the first one, after its waiting time", steps: "5 +150 3", outcomes: "rl",
			want: Counts{Received: 1, Late: 1, Expected: 1},
		},
		{
			name: "window overflow settles early", window: 64, steps: "0 100", outcomes: "rr",
			want: Counts{Received: 2, Lost: 36, Expected: 101},
		},
		{
			name: "window overflow joins the run", window: 64, steps: "0 100 +200 exp 50 10 99 100",
			outcomes: "rrllld", gaps: []uint64{99},
			want: Counts{Received: 2, Lost: 99, Late: 3, Duplicated: 1, Expected: 101},
		},
		{
			name: "old pending gap pushed out of the window", window: 64, steps: "0 2 3 70 +200 exp",
			outcomes: "rrrr", gaps: []uint64{1, 66},
			want: Counts{Received: 4, Lost: 67, Expected: 71},
		},
		{
			name: "pre-range pushed out of the window", window: 64, steps: "10 5 80 +200 exp",
			outcomes: "ror", extents: []uint64{1}, gaps: []uint64{4, 69},
			want: Counts{Received: 3, Lost: 73, Reordered: 1, Expected: 76},
		},
		{
			name: "a lone implausible jump is a stray", resync: 1000, steps: "0 1 5000 2 3", outcomes: "rrsrr",
			want: Counts{Received: 4, Stray: 1, Expected: 4},
		},
		{
			name: "implausible jump followed by the next number resyncs", resync: 1000,
			steps: "0 1 5000 5001 5002 +200 exp", outcomes: "rrsRr",
			want: Counts{Received: 4, Stray: 1, Resyncs: 1, Expected: 4},
		},
		{
			name: "resync settles what was pending", resync: 1000, steps: "0 1 3 5000 5001", outcomes: "rrrsR",
			gaps: []uint64{1}, want: Counts{Received: 4, Lost: 1, Stray: 1, Resyncs: 1, Expected: 5},
		},
		{
			name: "probation needs the very next number", resync: 1000, steps: "0 5000 5002 5003", outcomes: "rssR",
			want: Counts{Received: 2, Stray: 2, Resyncs: 1, Expected: 2},
		},
		{
			name: "datagrams between keep the probation", resync: 1000, steps: "0 5000 1 5001", outcomes: "rsrR",
			want: Counts{Received: 3, Stray: 1, Resyncs: 1, Expected: 3},
		},
		{
			name: "implausibly far behind resyncs back once confirmed", resync: 1000, window: 64,
			steps: "5000 5001 10 11 12 5002", outcomes: "rrsRrs",
			want: Counts{Received: 4, Stray: 2, Resyncs: 1, Expected: 4},
		},
		{
			name: "behind by the resync distance is only late", resync: 1000, window: 64, steps: "5000 4000",
			outcomes: "rl", want: Counts{Received: 1, Late: 1, Expected: 1},
		},
		{
			name: "the largest sequence number then zero", steps: "9223372036854775806 9223372036854775807 0 1 2",
			outcomes: "rrsRr", want: Counts{Received: 4, Stray: 1, Resyncs: 1, Expected: 4},
		},
		{
			name: "jump just below the resync threshold is loss", resync: 1000, window: 64, steps: "0 1000 +200 exp",
			outcomes: "rr", gaps: []uint64{999}, want: Counts{Received: 2, Lost: 999, Expected: 1001},
		},
		{
			name: "goodbye settles the tail", steps: "0 1 2 bye:5 +99 exp", outcomes: "rrr",
			want: Counts{Received: 3, Expected: 6},
		},
		{
			name: "goodbye tail lost after the waiting time", steps: "0 1 2 bye:5 +100 exp 4", outcomes: "rrrl",
			gaps: []uint64{3}, want: Counts{Received: 3, Lost: 3, Late: 1, Expected: 6},
		},
		{
			name: "tail arriving after the goodbye is in order", steps: "0 1 bye:3 2 3 +150 exp", outcomes: "rrrr",
			want: Counts{Received: 4, Expected: 4},
		},
		{
			name: "goodbye with a gap pending", steps: "0 2 bye:4 +150 exp", outcomes: "rr",
			gaps: []uint64{1, 2}, want: Counts{Received: 2, Lost: 3, Expected: 5},
		},
		{
			name: "goodbye below the highest is ignored", steps: "0 1 2 bye:1 +150 exp", outcomes: "rrr",
			want: Counts{Received: 3, Expected: 3},
		},
		{
			name: "implausible goodbye is ignored", resync: 1000, steps: "0 bye:99999 +150 exp", outcomes: "r",
			want: Counts{Received: 1, Expected: 1},
		},
		{
			name: "goodbye before any data is ignored", steps: "bye:9 +150 exp 3", outcomes: "r",
			want: Counts{Received: 1, Expected: 1},
		},
		{
			name: "settle declares pending lost now", steps: "0 3 settle 1", outcomes: "rrl",
			gaps: []uint64{2}, want: Counts{Received: 2, Lost: 2, Late: 1, Expected: 4},
		},
		{
			name: "data after a goodbye-settled tail", steps: "0 bye:2 +150 exp 5 +150 exp", outcomes: "rr",
			gaps: []uint64{2, 2}, want: Counts{Received: 2, Lost: 4, Expected: 6},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tr := New(Options{Timeout: 100 * ms, Window: tc.window, ResyncJump: tc.resync, Sink: rec})
			outcomes, extents := script(t, tr, tc.steps)
			if outcomes != tc.outcomes {
				t.Errorf("outcomes %q, want %q", outcomes, tc.outcomes)
			}
			if !reflect.DeepEqual(extents, tc.extents) {
				t.Errorf("extents %v, want %v", extents, tc.extents)
			}
			if !reflect.DeepEqual(rec.gaps, tc.gaps) {
				t.Errorf("gaps %v, want %v", rec.gaps, tc.gaps)
			}
			tc.want.Gaps = uint64(len(tc.gaps))
			if got := tr.Counts(); got != tc.want {
				t.Errorf("counts %+v\n          want %+v", got, tc.want)
			}
			if rec.lost != tr.Counts().Lost {
				t.Errorf("sink saw %d lost, counts say %d", rec.lost, tr.Counts().Lost)
			}
		})
	}
}

func TestPendingGapsBounded(t *testing.T) {
	rec := &recorder{}
	tr := New(Options{Timeout: 100 * ms, Sink: rec})
	// Every other number missing: each arrival reveals a new pending gap.
	for i := range uint64(MaxPendingGaps + 1) {
		tr.Observe(2*i, 0)
	}
	if tr.gaps.len() != MaxPendingGaps || tr.Counts().Lost != 0 {
		t.Fatalf("after %d gaps: %d pending, %d lost", MaxPendingGaps, tr.gaps.len(), tr.Counts().Lost)
	}
	tr.Observe(2*(MaxPendingGaps+1), 0)
	if tr.gaps.len() != MaxPendingGaps || tr.Counts().Lost != 1 || len(rec.gaps) != 1 {
		t.Fatalf("one past the bound: %d pending, %d lost, gaps %v", tr.gaps.len(), tr.Counts().Lost, rec.gaps)
	}
}

// TestAgainstOracle feeds random delivery orders (loss, duplication, bounded
// reordering, all within the waiting time and window) and compares every
// number with the independent oracle.
func TestAgainstOracle(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		delivered, last := randomDelivery(rng)
		rec := &recorder{}
		tr := New(Options{Timeout: int64(time.Hour), Window: 1024, Sink: rec})
		var extents, ns []uint64
		for i, s := range delivered {
			if r := tr.Observe(s, int64(i)); r.Outcome == Reordered {
				extents = append(extents, r.Extent)
				ns = append(ns, uint64(r.N))
			}
		}
		if last >= 0 {
			tr.Goodbye(uint64(last), int64(len(delivered)))
		}
		tr.Settle()
		want := oracle.Classify(delivered, last)
		got := tr.Counts()
		if got.Received != want.Received || got.Lost != want.Lost || got.Duplicated != want.Duplicated ||
			got.Reordered != want.Reordered || got.Expected != want.Expected || got.Late != 0 ||
			!reflect.DeepEqual(rec.gaps, want.Gaps) || !reflect.DeepEqual(extents, want.Extents) {
			t.Fatalf("seed %d, delivered %v last %d:\n got %+v gaps %v extents %v\nwant %+v",
				seed, delivered, last, got, rec.gaps, extents, want)
		}
		if got.Received+got.Lost != got.Expected {
			t.Fatalf("seed %d: invariant broken: %+v", seed, got)
		}
		for i, n := range want.N {
			if want := min(n, NReordering); ns[i] != want {
				t.Fatalf("seed %d, delivered %v: reordered datagram %d is %d-reordered, want %d (oracle %d)",
					seed, delivered, i, ns[i], want, n)
			}
		}
	}
}

// TestNReordering checks the n-reordering of reordered datagrams (RFC 4737
// section 5) against examples built by hand from its definition: a
// datagram is n-reordered when the n first copies that arrived just before
// it all have higher numbers.
func TestNReordering(t *testing.T) {
	for _, tc := range []struct {
		name, steps string
		n           []uint8 // of each reordered datagram, in arrival order
	}{
		{"one behind one", "1 3 2", []uint8{1}},
		{"two overtook it", "1 2 4 5 3", []uint8{2}},
		{"three overtook it: fast retransmit", "1 2 4 5 6 3", []uint8{3}},
		{"more than three is three or more", "1 5 6 7 8 2", []uint8{3}},
		{"reordered right after a lower one is not 1-reordered", "0 3 4 5 1 2", []uint8{3, 0}},
		{"overtaken across a loss", "0 2 4 5 6 1", []uint8{3}},
		{"copies are no arrivals", "0 2 3 3 3 1", []uint8{2}},
		{"late datagrams are no arrivals", "0 2 +150 4 5 6 1 3", []uint8{3}},
		{"before the first datagram", "4 5 6 2", []uint8{3}},
		{"counted again after a resync", "0 1 2 5000 5001 5003 5004 5005 5002", []uint8{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{Timeout: 100 * ms, ResyncJump: 1000})
			var now int64
			var got []uint8
			for _, step := range strings.Fields(tc.steps) {
				if strings.HasPrefix(step, "+") {
					now += mustInt(t, step[1:]) * ms
					continue
				}
				if r := tr.Observe(uint64(mustInt(t, step)), now); r.Outcome == Reordered {
					got = append(got, r.N)
				}
				now += ms
			}
			if !reflect.DeepEqual(got, tc.n) {
				t.Errorf("n-reorderings %v, want %v", got, tc.n)
			}
		})
	}
}

func randomDelivery(rng *rand.Rand) ([]uint64, int64) {
	n := 1 + rng.IntN(400)
	start := uint64(rng.IntN(3)) * uint64(rng.IntN(1<<20))
	loss := rng.Float64() * 0.3
	var out []uint64
	var held []uint64
	for i := range uint64(n) {
		s := start + i
		if rng.Float64() < loss {
			continue
		}
		if rng.Float64() < 0.1 {
			held = append(held, s) // released a few datagrams later
			continue
		}
		out = append(out, s)
		if rng.Float64() < 0.05 {
			out = append(out, s)
		}
		if len(held) > 0 && rng.Float64() < 0.3 {
			out = append(out, held[0])
			held = held[1:]
		}
	}
	out = append(out, held...)
	if len(out) == 0 {
		out = append(out, start)
	}
	last := int64(-1)
	if rng.IntN(2) == 0 {
		last = int64(start) + int64(n) - 1
	}
	return out, last
}

// FuzzTracker drives a tracker with arbitrary operations and checks, after
// each, the invariants that hold whatever arrives: every datagram has one
// outcome and the counts agree with them, nothing is counted twice (received
// and lost never exceed what the stream covers), the sink hears every loss,
// the state stays within its bounds; and at the end that a settled stream
// balances and its loss periods add up to its loss. Each pair of bytes is
// an operation and its argument. The seed corpus is in
// testdata/fuzz/FuzzTracker: loss, reordering, duplicates, goodbyes, resyncs
// both ways, window overflow.
func FuzzTracker(f *testing.F) {
	f.Fuzz(func(t *testing.T, ops []byte) {
		rec := &recorder{}
		const window = 64
		tr := New(Options{Timeout: 50, Window: window, ResyncJump: 5000, Sink: rec})
		var now int64
		var tally Counts
		base := uint64(1 << 20)
		// The send clocks wander: mostly forward with the numbers, but
		// back, far, and negative too, as a sender's can be made to say.
		var wander int64
		observe := func(seq uint64) {
			r := tr.ObserveSent(seq, now, int64(seq%(1<<30))*10_000_000+wander)
			switch r.Outcome {
			case Received:
				tally.Received++
			case Reordered:
				tally.Received++
				tally.Reordered++
			case Duplicated:
				tally.Duplicated++
			case Late:
				tally.Late++
			case Stray:
				tally.Stray++
			default:
				t.Fatalf("seq %d: no outcome", seq)
			}
			if r.Resync {
				tally.Resyncs++
			}
		}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], uint64(ops[i+1])
			switch op % 8 {
			case 0, 1, 2, 3:
				base += arg % 9 // mostly forward
				observe(base - arg%5)
			case 4:
				base += arg * arg * 3 // long jumps, some implausible
				observe(base)
			case 5:
				now += int64(arg)
				wander += (int64(arg) - 128) * int64(arg) * 1_000_000_000
				tr.Expire(now)
			case 6:
				tr.Goodbye(base+arg, now)
			case 7:
				if arg&1 == 1 {
					observe(base - min(base, arg*arg*3)) // far back, some implausibly
				} else {
					observe(base - arg*2)
				}
			}
			now++
			c := tr.Counts()
			if c.Received+c.Lost > c.Expected || c.Reordered > c.Received {
				t.Fatalf("after op %d: %+v", i/2, c)
			}
			if c.Received != tally.Received || c.Reordered != tally.Reordered || c.Duplicated != tally.Duplicated ||
				c.Late != tally.Late || c.Stray != tally.Stray || c.Resyncs != tally.Resyncs {
				t.Fatalf("after op %d: counts %+v, outcomes %+v", i/2, c, tally)
			}
			if rec.lost != c.Lost || rec.unavailable != c.Unavailable || uint64(len(rec.gaps)) != c.Gaps {
				t.Fatalf("after op %d: sink heard %d lost, %d unavailable seconds and %d loss periods, counts say %+v",
					i/2, rec.lost, rec.unavailable, len(rec.gaps), c)
			}
			for j, span := range rec.spans {
				if span < -1 {
					t.Fatalf("after op %d: loss period %d spans %d ns", i/2, j, span)
				}
			}
			if tr.gaps.len() > MaxPendingGaps || len(tr.gaps.buf) > MaxPendingGaps || len(tr.bits) != window/64 {
				t.Fatalf("after op %d: %d gaps pending in %d, %d words of flags", i/2, tr.gaps.len(), len(tr.gaps.buf), len(tr.bits))
			}
		}
		tr.Settle()
		c := tr.Counts()
		if c.Received+c.Lost != c.Expected {
			t.Fatalf("settled stream does not balance: %+v", c)
		}
		var sum uint64
		for _, g := range rec.gaps {
			sum += g
		}
		if sum != c.Lost || rec.lost != c.Lost || uint64(len(rec.gaps)) != c.Gaps {
			t.Fatalf("gaps %v sum to %d, sink lost %d, counts %+v", rec.gaps, sum, rec.lost, c)
		}
	})
}

func TestObserveAllocatesNothing(t *testing.T) {
	tr := New(Options{Timeout: 100 * ms, Sink: &recorder{}})
	var seq uint64
	var now int64
	allocs := testing.AllocsPerRun(10000, func() {
		seq += 1 + seq%3/2 // in order with a loss every third datagram
		now += 1000
		tr.Observe(seq, now)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
}

func BenchmarkObserve(b *testing.B) {
	for _, bc := range []struct {
		name string
		next func(i uint64) uint64
	}{
		{"in-order", func(i uint64) uint64 { return i }},
		{"loss-1pct", func(i uint64) uint64 { return i + i/100 }},
		{"reorder-swap", func(i uint64) uint64 { return i ^ 1 }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := New(Options{Timeout: 3 * int64(time.Second), Sink: &recorder{}})
			b.ReportAllocs()
			var i uint64
			for b.Loop() {
				tr.Observe(bc.next(i), int64(i)*10_000)
				i++
			}
		})
	}
}

func ExampleTracker() {
	tr := New(Options{Timeout: int64(3 * time.Second)})
	for _, seq := range []uint64{0, 1, 3, 4, 2, 2} {
		fmt.Println(seq, tr.Observe(seq, 0).Outcome)
	}
	tr.Expire(int64(3 * time.Second))
	fmt.Printf("%+v\n", tr.Counts())
	// Output:
	// 0 received
	// 1 received
	// 3 received
	// 4 received
	// 2 reordered
	// 2 duplicated
	// {Received:5 Lost:0 Duplicated:1 Reordered:1 Late:0 Stray:0 Gaps:0 Resyncs:0 Expected:5 Unavailable:0}
}

func TestReset(t *testing.T) {
	rec := &recorder{}
	tr := New(Options{Timeout: 100 * ms, Window: 64, Sink: rec})
	script(t, tr, "5 9 7 7")
	tr.Reset()
	if tr.Started() || tr.Counts() != (Counts{}) {
		t.Fatalf("after Reset: started %v, counts %+v", tr.Started(), tr.Counts())
	}
	if out, _ := script(t, tr, "100 101 103 +200 exp"); out != "rrr" || tr.Counts().Lost != 1 || tr.Counts().Expected != 4 {
		t.Fatalf("reused tracker: %q %+v", out, tr.Counts())
	}
}

// TestRevealed: a new highest sequence number reports the gap it opened
// just below itself, and nothing else does.
func TestRevealed(t *testing.T) {
	tr := New(Options{Timeout: 100 * ms, Window: 64, ResyncJump: 1000})
	for _, step := range []struct {
		seq, want uint64
	}{
		{10, 0}, // the first datagram
		{11, 0}, // in order
		{15, 3}, // 12, 13, 14
		{13, 0}, // reordered: fills, reveals nothing
		{15, 0}, // duplicate
		{16, 0},
		{2000, 0}, // a stray reveals nothing
		{2001, 0}, // nor does the resync it confirms
		{2004, 2},
	} {
		if got := tr.Observe(step.seq, 0).Revealed; got != step.want {
			t.Errorf("seq %d revealed %d, want %d", step.seq, got, step.want)
		}
	}
}

// TestPlausibleJump: a jump ahead beyond what the stream's rate makes
// plausible is a stray until the next number confirms it; a real outage,
// as long as the silence before it, is loss.
func TestPlausibleJump(t *testing.T) {
	const ms = int64(1e6)
	tr := New(Options{Timeout: 100 * ms})
	for seq := range uint64(100) { // 1,000 a second
		tr.Observe(seq, int64(seq)*ms)
	}
	// 10,000 ahead 1 ms later: at most 2 × 99/99 ms × 101 ms ≈ 202 are plausible.
	if r := tr.Observe(10099, 100*ms); r.Outcome != Stray {
		t.Fatalf("a jump of 10,000 after 1 ms: %v, want stray", r.Outcome)
	}
	// Silent for 10 s, then 10,000 ahead: the sender sent them (the stray
	// among them); they are lost.
	if r := tr.Observe(10100, 10100*ms); r.Outcome != Received || r.Revealed != 10000 {
		t.Fatalf("a jump of 10,000 after 10 s: %+v, want received revealing 10,000", r)
	}
	tr.Settle()
	if c := tr.Counts(); c.Lost != 10000 || c.Stray != 1 || c.Received != 101 {
		t.Fatalf("counts %+v, want 10,000 lost, 1 stray, 101 received", c)
	}
}

// sentAt feeds a tracker datagrams sent 10 ms apart by the sender's clock
// (number n at n·10 ms, unless clock says otherwise), each arriving 5 ms
// after it was sent, in the order given; then it expires everything due
// an hour on.
func sentAt(tr *Tracker, order []uint64, clock func(uint64) int64) {
	var last int64
	for _, s := range order {
		sent := clock(s)
		last = max(last, sent+5*ms)
		tr.ObserveSent(s, last, sent)
	}
}

func every10ms(s uint64) int64 { return int64(s) * 10 * ms }

// seq is the numbers from lo up to hi, but those in skip.
func seq(lo, hi uint64, skip ...[2]uint64) []uint64 {
	var out []uint64
	for s := lo; s <= hi; s++ {
		if !slices.ContainsFunc(skip, func(r [2]uint64) bool { return s >= r[0] && s <= r[1] }) {
			out = append(out, s)
		}
	}
	return out
}

// TestLossPeriodSpan: a loss period's span is the send clock of the
// datagram after it less that of the datagram before it, exactly where
// both were received; for a gap that reordered arrivals split, the send
// times of the numbers inside are interpolated between the gap's bounds;
// a run with no datagram before it or after it has none.
func TestLossPeriodSpan(t *testing.T) {
	late := func(s uint64) int64 { // irregular: the sender ran late now and then
		c := every10ms(s)
		switch s {
		case 9:
			c += 3 * ms
		case 20:
			c += 1 * ms
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		order  []uint64
		clock  func(uint64) int64
		window uint64
		bye    int64 // a goodbye announcing this, if not -1
		origin bool  // the stream began at 0
		gaps   []uint64
		spans  []int64
	}{
		{"one period", seq(0, 30, [2]uint64{10, 19}), every10ms, 0, -1, false, []uint64{10}, []int64{110 * ms}},
		{"the bounds' own send times", seq(0, 30, [2]uint64{10, 19}), late, 0, -1, false, []uint64{10}, []int64{108 * ms}},
		{"a gap split by a reordered arrival", append(seq(0, 1), 10, 5, 11), every10ms, 0, -1, false,
			[]uint64{3, 4}, []int64{40 * ms, 50 * ms}},
		{"two periods", seq(0, 30, [2]uint64{3, 4}, [2]uint64{20, 22}), every10ms, 0, -1, false,
			[]uint64{2, 3}, []int64{30 * ms, 40 * ms}},
		{"past the window at once", []uint64{0, 100}, every10ms, 64, -1, false, []uint64{99}, []int64{1000 * ms}},
		{"before the first datagram", seq(3, 10), every10ms, 0, -1, true, []uint64{3}, []int64{-1}},
		{"after the last datagram", seq(0, 10), every10ms, 0, 14, false, []uint64{4}, []int64{-1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tr := New(Options{Timeout: 100 * ms, Window: tc.window, Sink: rec})
			sentAt(tr, tc.order[:1], tc.clock)
			if tc.origin {
				tr.Origin(0)
			}
			sentAt(tr, tc.order[1:], tc.clock)
			if tc.bye >= 0 {
				tr.Goodbye(uint64(tc.bye), 300*ms)
			}
			tr.Expire(int64(time.Hour))
			tr.Settle()
			if !slices.Equal(rec.gaps, tc.gaps) || !slices.Equal(rec.spans, tc.spans) {
				t.Errorf("loss periods %v spanning %v ns, want %v spanning %v", rec.gaps, rec.spans, tc.gaps, tc.spans)
			}
		})
	}
}

// TestUnavailableSeconds: at 100 datagrams a second, a second is
// unavailable when more than half its 100 numbers are lost: 51, not 50.
// An outage from 1.3 s to 4.6 s by the sender's clock makes 4 (1.3 to 2
// is 70 lost, 2 to 4 all, 4 to 4.6 60); each is decided once settling
// reaches the next second, so an outage counts once its numbers are lost
// and the stream goes on. At one datagram every 2 s, a second without any
// is not judged.
func TestUnavailableSeconds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order []uint64
		clock func(uint64) int64
		want  uint64
	}{
		{"no loss", seq(0, 700), every10ms, 0},
		{"half of a second", seq(0, 700, [2]uint64{150, 199}), every10ms, 0},
		{"more than half", seq(0, 700, [2]uint64{149, 199}), every10ms, 1},
		{"90 lost across two seconds, half or less of each", seq(0, 700, [2]uint64{160, 249}), every10ms, 0},
		{"an outage of 3.3 s", seq(0, 700, [2]uint64{130, 459}), every10ms, 4},
		{"scattered loss, 60 %", func() []uint64 {
			var out []uint64
			for s := range uint64(700) {
				if s%10 >= 6 || s < 100 || s >= 600 {
					out = append(out, s)
				}
			}
			return out
		}(), every10ms, 5},
		{"one datagram every 2 s", seq(0, 20, [2]uint64{5, 7}), func(s uint64) int64 { return int64(s) * 2000 * ms }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tr := New(Options{Timeout: 100 * ms, Sink: rec})
			sentAt(tr, tc.order, tc.clock)
			tr.Expire(int64(time.Hour))
			if got := tr.Counts().Unavailable; got != tc.want || rec.unavailable != got {
				t.Errorf("%d unavailable seconds (%d told), want %d", got, rec.unavailable, tc.want)
			}
		})
	}
}

// TestTrackerLayout: what a datagram in order touches, from the start to
// the clocks' open second, is four cache lines of a Tracker, whose size
// (over 416 bytes, at most 448) takes a size class of Go's allocator whose
// objects start on a line.
func TestTrackerLayout(t *testing.T) {
	var tr Tracker
	if size := unsafe.Sizeof(tr); size <= 416 || size > 448 {
		t.Errorf("a Tracker is %d bytes, want 417 to 448", size)
	}
	for name, end := range map[string]uintptr{
		"received":    unsafe.Offsetof(tr.received) + unsafe.Sizeof(tr.received),
		"clocks.open": unsafe.Offsetof(tr.clocks) + unsafe.Offsetof(tr.clocks.open) + 1,
	} {
		if end > 4*64 {
			t.Errorf("%s ends at byte %d, past the fourth line", name, end)
		}
	}
}
