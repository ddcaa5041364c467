package tracker

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// ev is one step of a round-trip script. Times are in ms.
type ev struct {
	op       byte // 's' send, 'u' unsend, 'r' reply, 'b' goodbye reply, 'a' advance, 'f' finish
	seq      uint64
	count    uint64
	withheld uint64
	at       int64
}

func send(seq uint64, at int64) ev         { return ev{op: 's', seq: seq, at: at} }
func reply(seq, count uint64, at int64) ev { return ev{op: 'r', seq: seq, count: count, at: at} }

// replyW is a reply that reports withheld replies held back before it.
func replyW(seq, count, withheld uint64, at int64) ev {
	return ev{op: 'r', seq: seq, count: count, withheld: withheld, at: at}
}
func sendAll(n uint64, every int64) (es []ev) { // seqs 0..n-1, one every `every` ms from 0
	for i := range n {
		es = append(es, send(i, int64(i)*every))
	}
	return es
}

func TestRoundTrip(t *testing.T) {
	const timeout = 100 // ms
	for _, tc := range []struct {
		name   string
		script []ev
		want   RoundTripCounts
		rtts   []int64 // ms, in order of the replies
	}{
		{"all answered", append(sendAll(3, 10),
			reply(0, 1, 5), reply(1, 2, 16), reply(2, 3, 27), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 3}, []int64{5, 6, 7}},
		{"upstream loss: the receiver's count did not move", append(sendAll(5, 10),
			reply(0, 1, 5), reply(1, 2, 15), reply(4, 3, 45), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 3, Lost: 2, Upstream: 2}, []int64{5, 5, 5}},
		{"downstream loss: the receiver counted them", append(sendAll(5, 10),
			reply(0, 1, 5), reply(1, 2, 15), reply(4, 5, 45), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 3, Lost: 2, Downstream: 2}, []int64{5, 5, 5}},
		{"one of each in one gap", append(sendAll(5, 10),
			reply(0, 1, 5), reply(1, 2, 15), reply(4, 4, 45), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 3, Lost: 2, Upstream: 1, Downstream: 1}, []int64{5, 5, 5}},
		{"the split waits for the next reply", append(sendAll(4, 10),
			reply(0, 1, 5), ev{op: 'a', at: 500}),
			RoundTripCounts{Answered: 1, Lost: 3}, []int64{5}},
		{"a goodbye reply splits the tail", append(sendAll(4, 10),
			reply(0, 1, 5), ev{op: 'b', count: 3}, ev{op: 'a', at: 500}, ev{op: 'f'}),
			RoundTripCounts{Answered: 1, Lost: 3, Upstream: 1, Downstream: 2}, []int64{5}},
		{"finish without a goodbye reply leaves the tail unsplit", append(sendAll(4, 10),
			reply(0, 1, 5), ev{op: 'f'}),
			RoundTripCounts{Answered: 1, Lost: 3}, []int64{5}},
		{"at the timeout is late", append(sendAll(2, 10),
			reply(0, 1, 5), reply(1, 2, 10+timeout), reply(1, 2, 10+timeout+1), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 1, Lost: 1, Late: 1, Duplicated: 1}, []int64{5}},
		{"a duplicate reply", append(sendAll(2, 10),
			reply(0, 1, 5), reply(0, 1, 6), reply(1, 2, 15), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 2, Duplicated: 1}, []int64{5, 5}},
		{"a reply to a datagram never sent", append(sendAll(2, 10),
			ev{op: 'u', seq: 1}, reply(1, 2, 12), reply(7, 3, 12), ev{op: 'a', at: 1000}),
			RoundTripCounts{Lost: 1, Invalid: 2}, nil},
		{"upstream reordering: 7 before 6, then 8 lost", append(sendAll(10, 10),
			reply(5, 6, 55), reply(7, 7, 75), reply(6, 8, 76), reply(9, 9, 95), ev{op: 'a', at: 1000}),
			// 0-4 unanswered before the first reply: the receiver counted
			// five of them (count 6 at seq 5), so they are downstream. 8 was
			// lost upstream: its gap is judged against the running maximum 8.
			RoundTripCounts{Answered: 4, Lost: 6, Downstream: 5, Upstream: 1}, []int64{5, 5, 16, 5}},
		{"the receiver restarted: its count began again", append(sendAll(6, 10),
			reply(0, 1, 5), reply(1, 2, 15), reply(5, 1, 55), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 3, Lost: 3, Upstream: 3}, []int64{5, 5, 5}},
		{"replies held back by the receiver are withheld, not lost", append(sendAll(6, 10),
			replyW(0, 1, 0, 5), replyW(2, 3, 1, 25), replyW(4, 5, 2, 45), replyW(5, 6, 2, 55), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 4, Withheld: 2}, []int64{5, 5, 5, 5}},
		{"withheld and lost downstream in one gap", append(sendAll(5, 10),
			replyW(0, 1, 0, 5), replyW(4, 5, 1, 45), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 2, Lost: 2, Downstream: 2, Withheld: 1}, []int64{5, 5}},
		{"withheld, upstream and downstream in one gap", append(sendAll(6, 10),
			replyW(0, 1, 0, 5), replyW(5, 5, 1, 55), ev{op: 'a', at: 1000}),
			RoundTripCounts{Answered: 2, Lost: 3, Upstream: 1, Downstream: 2, Withheld: 1}, []int64{5, 5}},
		{"a goodbye reply splits the tail's withheld replies too", append(sendAll(4, 10),
			replyW(0, 1, 0, 5), ev{op: 'b', count: 4, withheld: 2}, ev{op: 'a', at: 500}, ev{op: 'f'}),
			RoundTripCounts{Answered: 1, Lost: 1, Downstream: 1, Withheld: 2}, []int64{5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRoundTrip(int64(timeout*time.Millisecond), 100)
			var rtts []int64
			for _, e := range tc.script {
				at := e.at * int64(time.Millisecond)
				switch e.op {
				case 's':
					r.Send(e.seq, at)
				case 'u':
					r.Unsend(e.seq)
				case 'r':
					if res := r.Reply(e.seq, Report{Received: e.count, Withheld: e.withheld}, at); res.Outcome == ReplyAnswered {
						rtts = append(rtts, res.RTT/int64(time.Millisecond))
					}
				case 'b':
					r.Goodbye(Report{Received: e.count, Withheld: e.withheld}, at)
				case 'a':
					r.Expire(at)
				case 'f':
					r.Settle()
				}
			}
			if r.c != tc.want {
				t.Errorf("counts\n got %+v\nwant %+v", r.c, tc.want)
			}
			if !slices.Equal(rtts, tc.rtts) {
				t.Errorf("rtts %v, want %v", rtts, tc.rtts)
			}
			if r.c.Upstream+r.c.Downstream > r.c.Lost {
				t.Errorf("the split %d+%d exceeds the loss %d", r.c.Upstream, r.c.Downstream, r.c.Lost)
			}
			if r.c.Answered+r.c.Lost+r.c.Withheld != r.next {
				t.Errorf("answered %d + lost %d + withheld %d != %d sent", r.c.Answered, r.c.Lost, r.c.Withheld, r.next)
			}
		})
	}
}

// TestRoundTripWindow: with no time passing and no replies, sending more
// than the window holds decides the oldest early, as lost.
func TestRoundTripWindow(t *testing.T) {
	r := NewRoundTrip(int64(time.Second), 1) // 1 + 64 rounds up to 128 slots
	if len(r.slots) != 128 {
		t.Fatalf("window %d, want 128", len(r.slots))
	}
	for seq := range uint64(200) {
		r.Send(seq, 0)
	}
	if r.c.Lost != 200-128 || r.next-r.oldest != 128 {
		t.Fatalf("lost %d, held %d; want 72 and 128", r.c.Lost, r.next-r.oldest)
	}
	if res := r.Reply(10, Report{Received: 11}, 1); res.Outcome != ReplyLate || r.c.Late != 1 {
		t.Fatalf("a reply to a datagram decided early: late %d", r.c.Late)
	}
}

// TestRoundTripSettled: settled needs every datagram decided and the
// goodbye answered.
func TestRoundTripSettled(t *testing.T) {
	r := NewRoundTrip(int64(time.Second), 10)
	r.Send(0, 0)
	r.Reply(0, Report{Received: 1}, 1)
	r.Expire(2)
	if r.Settled() {
		t.Fatal("settled before the goodbye's reply")
	}
	r.Goodbye(Report{Received: 1}, 1)
	if !r.Settled() {
		t.Fatal("not settled after everything came back")
	}
}

// TestRoundTripDeadPath: losses no reply explains are counted a loss
// timeout after the first of them was decided, direction unknown; a reply
// that comes after that and reports withheld replies cannot take them back
// from the loss (counters only grow): they count downstream.
func TestRoundTripDeadPath(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	r := NewRoundTrip(ms(100), 100)
	for seq := range uint64(3) {
		r.Send(seq, ms(int64(seq)*10))
	}
	r.Reply(0, Report{Received: 1}, ms(5))
	r.Expire(ms(110)) // 1 is due: the gap opens
	r.Expire(ms(120)) // 2 too
	if r.c.Lost != 0 {
		t.Fatalf("lost %d before a loss timeout passed over the gap", r.c.Lost)
	}
	r.Expire(ms(209))
	if r.c.Lost != 0 {
		t.Fatalf("lost %d at 209 ms", r.c.Lost)
	}
	r.Expire(ms(210))
	if r.c.Lost != 2 || r.c.Upstream+r.c.Downstream != 0 {
		t.Fatalf("at 210 ms %+v, want 2 lost, direction unknown", r.c)
	}
	r.Send(3, ms(215))
	r.Reply(3, Report{Received: 4, Withheld: 1}, ms(216)) // both reached it; it held back one reply
	r.Expire(ms(1000))
	if want := (RoundTripCounts{Answered: 2, Lost: 2, Downstream: 2}); r.c != want {
		t.Fatalf("counts %+v, want %+v", r.c, want)
	}
}

// TestRoundTripUnknownCount: replies that carry no count (a stateless
// STAMP reflector's) answer their datagrams and measure their round trips;
// the losses between them are lost with their direction unknown, as are
// those the session ends with.
func TestRoundTripUnknownCount(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	r := NewRoundTrip(ms(100), 100)
	for seq := range uint64(8) {
		r.Send(seq, ms(int64(seq)))
	}
	for _, seq := range []uint64{0, 3, 4, 6} { // 1, 2 and 5 lost; 7 the tail
		if res := r.Reply(seq, Report{Received: UnknownCount}, ms(int64(seq)+2)); res.Outcome != ReplyAnswered || res.RTT != ms(2) {
			t.Fatalf("reply to %d: %+v", seq, res)
		}
	}
	r.Expire(ms(500))
	r.Settle()
	if want := (RoundTripCounts{Answered: 4, Lost: 4}); r.c != want {
		t.Fatalf("counts %+v, want %+v", r.c, want)
	}
}

// TestRoundTripUnsplit: while unsplit, gaps are lost with their direction
// unknown, but the counts are kept: once split, the next gap is split
// against the count of the reply before it.
func TestRoundTripUnsplit(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	r := NewRoundTrip(ms(100), 100)
	r.Unsplit()
	for seq := range uint64(10) {
		r.Send(seq, ms(int64(seq)))
	}
	// Counts as a stateful STAMP reflector's: replies sent so far. 1 lost
	// on the way back (it was counted: 2's count is 3), 4 on the way
	// there (5's count is 5, not 6), then 7 on the way back, 8 there.
	for _, rep := range [][2]uint64{{0, 1}, {2, 3}, {3, 4}} {
		r.Reply(rep[0], Report{Received: rep[1]}, ms(int64(rep[0])+1))
	}
	r.Expire(ms(104)) // 0 to 4 decided, unsplit: 1 is lost, direction unknown; 4 waits for 5
	r.Split()
	for _, rep := range [][2]uint64{{5, 5}, {6, 6}, {9, 8}} {
		r.Reply(rep[0], Report{Received: rep[1]}, ms(int64(rep[0])+1))
	}
	r.Expire(ms(500))
	if want := (RoundTripCounts{Answered: 6, Lost: 4, Upstream: 2, Downstream: 1}); r.c != want {
		t.Fatalf("counts %+v, want %+v", r.c, want)
	}
}

// TestRoundTripLegs drives a round trip against a receiver modelled with a
// Tracker, numbering its replies and reporting its losses as a version-5
// receiver does, over paths that drop and reorder on both legs, one probe
// overtaken even by the goodbyes: the losses on each leg equal what each
// path dropped, exactly, for every seed. The count split alone (the same replies without the legs) is not
// exact under such reordering: the test requires it to miss for some
// seeds, or the comparison would not show anything.
func TestRoundTripLegs(t *testing.T) {
	const (
		n       = 2000
		every   = int64(10 * time.Millisecond)
		timeout = int64(time.Second)
	)
	countMissed := 0
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		delay := func() int64 { // 5 ms, and a tenth of them up to 60 ms more: reordering
			d := int64(5 * time.Millisecond)
			if rng.IntN(10) == 0 {
				d += rng.Int64N(int64(60 * time.Millisecond))
			}
			return d
		}
		type event struct {
			at      int64
			seq     uint64
			goodbye bool
			rep     Report
		}
		// The way there: probes and, after the last, three goodbyes
		// that all arrive, in order of arrival; the last probe but one
		// arrives after all three.
		var there []event
		var up uint64
		for i := range uint64(n) {
			if rng.IntN(20) == 0 {
				up++
				continue
			}
			at := int64(i)*every + delay()
			if i == n-2 {
				at = n*every + timeout/2 + int64(10*time.Millisecond)
			}
			there = append(there, event{at: at, seq: i})
		}
		for k := range int64(3) {
			there = append(there, event{at: n*every + timeout/2 + k, seq: n - 1, goodbye: true})
		}
		slices.SortStableFunc(there, func(a, b event) int { return cmp.Compare(a.at, b.at) })
		// The receiver: replies to first copies in time, numbered; a
		// twentieth of the data replies are lost on the way back.
		rx := New(Options{Timeout: timeout})
		var back []event
		var replied, down uint64
		for _, e := range there {
			var c Counts
			rep := Report{Session: 99, Number: replied}
			if e.goodbye {
				rx.Goodbye(e.seq, e.at)
				c = rx.Counts()
				rep.Received, rep.Lost = c.Received, c.Expected-c.Received
				back = append(back, event{at: e.at + delay(), seq: e.seq, goodbye: true, rep: rep})
				continue
			}
			if o := rx.Observe(e.seq, e.at).Outcome; o != Received && o != Reordered {
				t.Fatalf("seed %d: the receiver saw %d as %v", seed, e.seq, o)
			}
			c = rx.Counts()
			rep.Received, rep.Lost = c.Received, c.Lost
			replied++
			// (The overtaken probe's reply always comes back: were it lost
			// too, nothing would ever tell the sender that the probe had
			// arrived, and it would count upstream.)
			if rng.IntN(20) == 0 && e.seq != n-2 {
				down++
				continue
			}
			back = append(back, event{at: e.at + delay(), seq: e.seq, rep: rep})
		}
		slices.SortStableFunc(back, func(a, b event) int { return cmp.Compare(a.at, b.at) })
		run := func(legs bool) RoundTripCounts {
			r := NewRoundTrip(timeout, 100)
			i := 0
			for seq := range uint64(n) {
				at := int64(seq) * every
				for ; i < len(back) && back[i].at <= at; i++ {
					r.feed(back[i].seq, back[i].goodbye, back[i].rep, legs, back[i].at)
				}
				r.Send(seq, at)
			}
			for ; i < len(back); i++ {
				r.feed(back[i].seq, back[i].goodbye, back[i].rep, legs, back[i].at)
			}
			r.Expire(n*every + 2*timeout)
			r.Settle()
			return r.Counts()
		}
		want := RoundTripCounts{Answered: n - up - down, Lost: up + down, Upstream: up, Downstream: down}
		if got := run(true); got != want {
			t.Fatalf("seed %d: counts\n got %+v\nwant %+v", seed, got, want)
		}
		if got := run(false); got != want {
			countMissed++
		}
	}
	if countMissed == 0 {
		t.Fatal("the count split was exact for every seed: the paths do not reorder across losses")
	}
	t.Logf("the count split alone missed for %d of 40 seeds; the legs were exact for all", countMissed)
}

// feed hands the round trip one reply, with its legs or without.
func (r *RoundTrip) feed(seq uint64, goodbye bool, rep Report, legs bool, at int64) {
	if !legs {
		rep.Session, rep.Number, rep.Lost = 0, 0, 0
	}
	if goodbye {
		r.Goodbye(rep, at)
		return
	}
	r.Reply(seq, rep, at)
}

// TestRoundTripLegsRestart: a receiver that restarts mid-session gives
// the session a new id and numbers its replies from 0 again; what each of
// its ids reported is added up, and what was sent while it was down has
// no direction. Probes 0–19 at 10 ms, a 20 ms waiting time on both sides,
// arriving 1 ms after sending and answered 1 ms after that.
func TestRoundTripLegsRestart(t *testing.T) {
	ms := func(v int64) int64 { return v * int64(time.Millisecond) }
	type answer struct{ seq, id, number, lost, received uint64 }
	replies := []answer{
		// The first receiver: 3 is lost on the way there (it decides so
		// when 6 arrives, 20 ms after 4 revealed it), and its reply number
		// 4, to probe 5, on the way back.
		{0, 1, 0, 0, 1}, {1, 1, 1, 0, 2}, {2, 1, 2, 0, 3}, {4, 1, 3, 0, 4},
		{6, 1, 5, 1, 6}, {7, 1, 6, 1, 7}, {8, 1, 7, 1, 8}, {9, 1, 8, 1, 9},
		// Down for 10 and 11; then the restarted one: 15 lost on the way
		// there, reply number 4, to 17, on the way back.
		{12, 2, 0, 0, 1}, {13, 2, 1, 0, 2}, {14, 2, 2, 0, 3}, {16, 2, 3, 0, 4},
		{18, 2, 5, 1, 6}, {19, 2, 6, 1, 7},
	}
	r := NewRoundTrip(ms(20), 100)
	i := 0
	for seq := range uint64(20) {
		r.Send(seq, ms(int64(seq)*10))
		for ; i < len(replies) && replies[i].seq == seq; i++ {
			a := replies[i]
			r.Reply(seq, Report{Received: a.received, Session: a.id, Number: a.number, Lost: a.lost}, ms(int64(seq)*10+2))
		}
	}
	// A straggler from the first receiver changes nothing.
	r.Reply(9, Report{Received: 9, Session: 1, Number: 8, Lost: 1}, ms(193))
	r.Goodbye(Report{Received: 7, Session: 2, Number: 7, Lost: 1}, ms(202))
	r.Expire(ms(300))
	r.Settle()
	want := RoundTripCounts{Answered: 14, Duplicated: 1, Lost: 6, Upstream: 2, Downstream: 2}
	if r.c != want {
		t.Fatalf("counts\n got %+v\nwant %+v", r.c, want)
	}
}

// TestRoundTripLayout: a RoundTrip is over 128 bytes and at most 192, the
// size class of Go's allocator it then takes, whose objects start on a
// cache line; what a datagram and its reply read, up to the counts a reply
// changes, is in its first two lines.
func TestRoundTripLayout(t *testing.T) {
	var r RoundTrip
	if size := unsafe.Sizeof(r); size <= 128 || size > 192 {
		t.Errorf("a RoundTrip is %d bytes, want 129 to 192", size)
	}
	if end := unsafe.Offsetof(r.c) + unsafe.Offsetof(r.c.Downstream) + unsafe.Sizeof(r.c.Downstream); end > 2*64 {
		t.Errorf("the counts a reply changes end at byte %d, past the second line", end)
	}
}

// TestOriginOncePerSegment: ObserveFrom, which a round trip follows its
// reply numbers by, tells the tracker where they begin only as a segment
// starts (the first reply, a resync). Over random reply numbers, near the
// origin and past the window, with losses, reordering, duplicates and
// jumps that resync, near the origin and far from it, it counts exactly
// what telling it at every reply counts.
func TestOriginOncePerSegment(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 500 {
		opts := Options{Timeout: 50, Window: 64, ResyncJump: 500}
		every, once := New(opts), New(opts)
		var now int64
		next := uint64(rng.IntN(3)) * uint64(rng.IntN(100)) // from 0, or a little or far past it
		for range 1 + rng.IntN(200) {
			now += int64(rng.IntN(20))
			seq := next
			switch op := rng.IntN(20); {
			case op == 0:
				next += 1000 + uint64(rng.IntN(1000)) // a jump: a stray, then a resync if followed
				seq = next
			case op == 1 && next > 1000:
				next = uint64(rng.IntN(20)) // back near the origin, far below: the same
				seq = next
			case op < 3 && seq > 3:
				seq -= uint64(1 + rng.IntN(3)) // reordered or duplicated
			case op < 5:
				next += uint64(1 + rng.IntN(5)) // a loss
				seq = next
			}
			if seq == next {
				next++
			}
			every.Observe(seq, now)
			every.Origin(0)
			once.ObserveFrom(seq, now, 0)
			if a, b := every.Counts(), once.Counts(); a != b {
				t.Fatalf("round %d, reply %d at %d: told at every reply %+v, at each segment's start %+v", round, seq, now, a, b)
			}
		}
		now += 100
		every.Expire(now)
		once.Expire(now)
		every.Settle()
		once.Settle()
		if a, b := every.Counts(), once.Counts(); a != b {
			t.Fatalf("round %d, settled: told at every reply %+v, at each segment's start %+v", round, a, b)
		}
	}
}
