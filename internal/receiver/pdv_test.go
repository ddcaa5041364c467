package receiver

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/udpprobe/udpprobe/internal/wire"
)

// recording is a peer's histogram that also keeps every value observed.
type recording struct {
	prometheus.Metric
	o   prometheus.Observer
	got []float64
}

func (r *recording) Observe(v float64) {
	r.got = append(r.got, v)
	r.o.Observe(v)
}

// record makes the PDV histogram of the table's only peer keep what it is
// given.
func record(t *testing.T, tt *testTable) *recording {
	t.Helper()
	if len(tt.peers) != 1 {
		t.Fatalf("%d peers, want 1", len(tt.peers))
	}
	for _, p := range tt.peers {
		r := &recording{Metric: p.m.PDV.(prometheus.Metric), o: p.m.PDV}
		p.m.PDV = r
		return r
	}
	return nil
}

// TestPDV sends 1,500 datagrams 10 ms apart by the sender's clocks, each
// with a known one-way delay, through a table, in the order they arrive,
// on a receiver whose clocks are offset from the sender's by a constant.
// Every datagram's PDV must be its delay less the least of its interval,
// exactly: the first 10 s of arrivals (datagrams 0 to 999, least delay
// 1 ms), then the rest, ended a waiting time after the goodbye (least
// 5 ms: the route changed). The constant offset must change nothing. Every 100th
// datagram, 35 ms late, is overtaken by the 3 after it: 3-reordered; every
// 50th other one, 20 ms late, only by 2.
func TestPDV(t *testing.T) {
	const n, gap = 1500, 10 * int64(time.Millisecond)
	delay := func(i int) int64 {
		d := int64(time.Millisecond) + int64((i+3)%7)*300*int64(time.Microsecond) // least at neither end
		if i >= 1000 {
			d += 4 * int64(time.Millisecond)
		}
		switch {
		case i%100 == 0 && i > 0:
			d += 35 * int64(time.Millisecond)
		case i%50 == 0 && i > 0:
			d += 20 * int64(time.Millisecond)
		}
		return d
	}
	want := make([]float64, n)
	for _, iv := range [][2]int{{0, 1000}, {1000, n}} {
		least := delay(iv[0])
		for i := iv[0]; i < iv[1]; i++ {
			least = min(least, delay(i))
		}
		for i := iv[0]; i < iv[1]; i++ {
			want[i] = float64(delay(i)-least) / 1e9
		}
	}
	for _, offset := range []int64{0, 3 * int64(time.Hour)} {
		tt := newTable(t, Options{DepthMetrics: true, LossTimeout: time.Second})
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		arrival := func(i int) int64 { return int64(i)*gap + delay(i) + offset }
		slices.SortFunc(order, func(a, b int) int { return int(arrival(a) - arrival(b)) })
		var rec *recording
		b := make([]byte, 104)
		var seen []int // the datagrams in the order the PDV histogram saw them
		for _, i := range order {
			h := wire.Header{Name: []byte("alpha"), Target: []byte(testTarget), Session: 1, Seq: uint64(i),
				SendTime: wall0 + int64(i)*gap, SendClock: int64(i) * gap}
			if err := wire.Encode(b, &h); err != nil {
				t.Fatal(err)
			}
			tt.handle(b, Instant{Wall: wall0 + arrival(i), Mono: arrival(i)})
			if rec == nil {
				rec = record(t, tt)
			}
			seen = append(seen, i)
		}
		bye := wire.Header{Name: []byte("alpha"), Target: []byte(testTarget), Session: 1, Seq: n - 1, Flags: wire.FlagGoodbye,
			SendTime: wall0 + n*gap, SendClock: n * gap}
		if err := wire.Encode(b, &bye); err != nil {
			t.Fatal(err)
		}
		byeAt := n*gap + offset
		tt.handle(b, Instant{Wall: wall0 + byeAt, Mono: byeAt})
		// The interval ends a waiting time after the goodbye, for the
		// datagrams it overtook.
		tt.Housekeep(Instant{Wall: wall0 + byeAt + int64(time.Second) - 1, Mono: byeAt + int64(time.Second) - 1})
		if len(rec.got) != 1000 {
			t.Fatalf("offset %v: %d PDV observations before the goodbye's waiting time passed, want 1000 (the first interval)",
				time.Duration(offset), len(rec.got))
		}
		tt.Housekeep(Instant{Wall: wall0 + byeAt + int64(time.Second), Mono: byeAt + int64(time.Second)})
		if len(rec.got) != n {
			t.Fatalf("offset %v: %d PDV observations, want %d", time.Duration(offset), len(rec.got), n)
		}
		for k, i := range seen {
			if rec.got[k] != want[i] {
				t.Fatalf("offset %v: datagram %d (delay %v): PDV %v s, want %v s", time.Duration(offset), i,
					time.Duration(delay(i)), rec.got[k], want[i])
			}
		}
		if got := tt.sample(t, "pdv_seconds_count", "alpha"); got != n {
			t.Errorf("offset %v: PDV histogram counts %v, want %d", time.Duration(offset), got, n)
		}
		if got, want := tt.sample(t, "packets_reordered_total", "alpha"), float64(29); got != want {
			t.Errorf("offset %v: %v reordered, want %v (every 50th but the first)", time.Duration(offset), got, want)
		}
		if got, want := tt.sample(t, "packets_n_reordered_total", "alpha"), float64(14); got != want {
			t.Errorf("offset %v: %v 3-reordered, want %v (every 100th but the first)", time.Duration(offset), got, want)
		}
	}
}

// TestPDVInterval: an interval ends 10 s after its first delay arrived or
// at its 1,024th delay, and housekeeping ends one that is over without
// waiting for the next datagram.
func TestPDVInterval(t *testing.T) {
	var v pdv
	rec := &recording{o: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"})}
	sec := int64(time.Second)
	v.add(5, 0, rec)
	v.add(3, sec, rec)
	v.expire(10*sec-1, rec)
	if len(rec.got) != 0 {
		t.Fatalf("an interval ended before its 10 s: %v", rec.got)
	}
	v.expire(10*sec, rec)
	if !slices.Equal(rec.got, []float64{2e-9, 0}) {
		t.Fatalf("observed %v, want 2 ns and 0", rec.got)
	}
	rec.got = nil
	for i := range pdvMaxDelays + 1 {
		v.add(int64(pdvMaxDelays-i), 11*sec, rec) // falling: the least is the last of the interval
	}
	if len(rec.got) != pdvMaxDelays || rec.got[0] != float64(pdvMaxDelays-1)/1e9 || rec.got[pdvMaxDelays-1] != 0 {
		t.Fatalf("a full interval observed %d values from %v to %v, want %d from %v to 0", len(rec.got), rec.got[0],
			rec.got[len(rec.got)-1], pdvMaxDelays, float64(pdvMaxDelays-1)/1e9)
	}
	if len(v.delays) != 1 || v.least != 0 {
		t.Fatalf("the next interval holds %v (least %d), want the 1,025th delay alone", v.delays, v.least)
	}
}
