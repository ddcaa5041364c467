package metrics

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/tracker"
)

// TestLint builds every metric on a pedantic registry, with one peer on each
// side so labelled series exist, and requires promlint to find nothing.
func TestLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := NewSender(reg, "a", ClassicAndNative)
	sp := s.Target("198.51.100.1:6464", roundTripsOnly(func() tracker.RoundTripCounts { return tracker.RoundTripCounts{Answered: 1} }))
	sp.RTT.Observe(.04)
	s.STAMPTarget("stamp://198.51.100.2:862", roundTripsOnly(func() tracker.RoundTripCounts { return tracker.RoundTripCounts{} })).Stateful.Set(1)
	s.ScheduleLateness.Observe(.0001)
	r := NewReceiver(reg, ClassicAndNative)
	p := r.NewPeer("alpha", "rx:6464")
	r.Export(slices.Values([]*ReceiverPeer{p}))
	p.GapLength.Observe(3)
	p.ReorderExtent.Observe(1)
	p.OneWayDelay.Observe(.02)
	p.IPDV.Observe(.001)
	NewClock(reg, func() (bool, time.Duration, error) { return true, time.Millisecond, nil })
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "udpprobe_") {
			t.Errorf("metric %s lacks the udpprobe_ prefix", mf.GetName())
		}
	}
}

// TestRoundTripsReadAtScrape: the round-trip totals are the tracker's, and
// the datagrams sent the target's count, read at every scrape, each under
// its own name.
func TestRoundTripsReadAtScrape(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := tracker.RoundTripCounts{Answered: 1, Late: 2, Duplicated: 3, Invalid: 4, Lost: 5, Upstream: 6, Downstream: 7}
	sent := uint64(8)
	NewSender(reg, "a", ClassicAndNative).Target("a:1", TargetCounts{
		Sent: func() uint64 { return sent }, RoundTrips: func() tracker.RoundTripCounts { return c }})
	want := func(c tracker.RoundTripCounts) string {
		var b strings.Builder
		fmt.Fprintf(&b, "# HELP udpprobe_sender_packets_sent_total Data datagrams handed to the kernel.\n"+
			"# TYPE udpprobe_sender_packets_sent_total counter\n"+
			"udpprobe_sender_packets_sent_total{sender=\"a\",target=\"a:1\"} %d\n", sent)
		for _, m := range roundTripMetrics {
			name := "udpprobe_sender_" + m.name
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s{sender=\"a\",target=\"a:1\"} %d\n", name, m.help, name, name, m.value(&c))
		}
		return b.String()
	}
	names := []string{"udpprobe_sender_packets_sent_total", "udpprobe_sender_replies_received_total", "udpprobe_sender_replies_late_total",
		"udpprobe_sender_replies_duplicated_total",
		"udpprobe_sender_roundtrip_packets_lost_total", "udpprobe_sender_upstream_packets_lost_total",
		"udpprobe_sender_downstream_packets_lost_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(c)), names...); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(want(c), "udpprobe_sender_downstream_packets_lost_total{sender=\"a\",target=\"a:1\"} 7") {
		t.Fatal("the expected text lost the downstream count")
	}
	c.Lost, sent = 50, 80
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(c)), names...); err != nil {
		t.Fatalf("after the tracker moved on: %v", err)
	}
}

// TestExportedPeers: the peers' series and the peer count are those of the
// peers Export yields at the scrape, no more and no fewer.
func TestExportedPeers(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewReceiver(reg, ClassicAndNative)
	if n, err := testutil.GatherAndCount(reg, "udpprobe_receiver_peers"); err != nil || n != 1 {
		t.Fatalf("%d peer-count series before Export (%v), want 1", n, err)
	}
	alpha, beta := r.NewPeer("alpha", "rx:6464"), r.NewPeer("beta", "rx:6464")
	alpha.Mark()     // its sender sets a traffic class,
	alpha.KnowHops() // and says its hop limit,
	alpha.Deep()     // and the depth metrics are on: every per-peer metric
	peers := []*ReceiverPeer{alpha, beta}
	r.Export(func(yield func(*ReceiverPeer) bool) {
		for _, p := range peers {
			if !yield(p) {
				return
			}
		}
	})
	before, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	peers = peers[1:]
	after, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Every per-peer metric, histograms counting as one each.
	if before-after != len(peerMetrics) {
		t.Fatalf("forgetting a peer removed %d series, want %d", before-after, len(peerMetrics))
	}
	want := `
# HELP udpprobe_receiver_peers Peers in the peer table: senders, each with the target it names this receiver by.
# TYPE udpprobe_receiver_peers gauge
udpprobe_receiver_peers 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "udpprobe_receiver_peers"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "udpprobe_receiver_packets_received_total"); err != nil || n != 1 {
		t.Fatalf("%d received series left (%v), want 1 (beta)", n, err)
	}
	// beta's sender sets no traffic class: no series for what the path
	// did to it, until it does.
	if n, err := testutil.GatherAndCount(reg, "udpprobe_receiver_packets_remarked_total"); err != nil || n != 0 {
		t.Fatalf("%d remarked series of an unmarked peer (%v), want 0", n, err)
	}
	beta.Remarked.Inc()
	beta.Mark()
	want = `
# HELP udpprobe_receiver_packets_remarked_total Datagrams that arrived with another DSCP than their sender set; exported once the sender sets a traffic class (a DSCP or an ECN codepoint).
# TYPE udpprobe_receiver_packets_remarked_total counter
udpprobe_receiver_packets_remarked_total{sender="beta",target="rx:6464"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "udpprobe_receiver_packets_remarked_total"); err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg); n != after+3 {
		t.Fatalf("%d series once beta is marked, want %d: three more", n, after+3)
	}
}

// TestPeerSeries: a peer's instruments are the ones exported under its
// label, read at the scrape; each peer holds its own histograms.
func TestPeerSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewReceiver(reg, ClassicAndNative)
	a, b := r.NewPeer("alpha", "rx:6464"), r.NewPeer("beta", "rx:6464")
	r.Export(slices.Values([]*ReceiverPeer{a, b}))
	a.Received.Add(3)
	a.OneWayDelay.Observe(.002)
	b.Received.Inc()
	a.Jitter.Set(.25)
	want := `
# HELP udpprobe_receiver_packets_received_total First copies of data datagrams received.
# TYPE udpprobe_receiver_packets_received_total counter
udpprobe_receiver_packets_received_total{sender="alpha",target="rx:6464"} 3
udpprobe_receiver_packets_received_total{sender="beta",target="rx:6464"} 1
# HELP udpprobe_receiver_jitter_seconds RFC 3550 interarrival jitter of the current session, from in-order datagrams; independent of clock offset.
# TYPE udpprobe_receiver_jitter_seconds gauge
udpprobe_receiver_jitter_seconds{sender="alpha",target="rx:6464"} 0.25
udpprobe_receiver_jitter_seconds{sender="beta",target="rx:6464"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"udpprobe_receiver_packets_received_total", "udpprobe_receiver_jitter_seconds"); err != nil {
		t.Fatal(err)
	}
	a.Received.Inc()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(want, `"rx:6464"} 3`, `"rx:6464"} 4`, 1)),
		"udpprobe_receiver_packets_received_total", "udpprobe_receiver_jitter_seconds"); err != nil {
		t.Fatalf("the next scrape: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "udpprobe_receiver_one_way_delay_seconds"); err != nil || n != 2 {
		t.Fatalf("%d one-way delay series (%v), want 2", n, err)
	}
	// The table declares every instrument of a peer, once.
	fields := reflect.TypeFor[ReceiverPeer]()
	exported := 0
	for i := range fields.NumField() {
		if fields.Field(i).IsExported() {
			exported++
		}
	}
	if exported != len(peerMetrics) {
		t.Errorf("%d instrument fields, %d declared metrics; want one each", exported, len(peerMetrics))
	}
	for _, m := range peerMetrics {
		if o, ok := m.field(a).(*prometheus.Observer); ok && *o == nil {
			t.Errorf("%s: NewPeer made no histogram", m.name)
		}
	}
}

// TestInvalidRepliesPerSender: the invalid replies are one series for the
// sender, summed over its targets at each scrape, and a target forgotten
// leaves its count in it, so the counter never goes down.
func TestInvalidRepliesPerSender(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := NewSender(reg, "a", ClassicAndNative)
	a, b := tracker.RoundTripCounts{Invalid: 4}, tracker.RoundTripCounts{Invalid: 5}
	s.Target("a:1", roundTripsOnly(func() tracker.RoundTripCounts { return a }))
	s.Target("b:1", roundTripsOnly(func() tracker.RoundTripCounts { return b }))
	count := func() float64 {
		v, err := scrape.Gather(reg)
		if err != nil {
			t.Fatal(err)
		}
		return v[`udpprobe_sender_replies_invalid_total{sender="a"}`]
	}
	if n := count(); n != 9 {
		t.Fatalf("invalid replies %v, want 9 (4 + 5)", n)
	}
	a.Invalid = 6
	s.Forget("a:1")
	b.Invalid = 7
	if n := count(); n != 13 {
		t.Fatalf("after forgetting a target with 6: %v, want 13 (6 + 7)", n)
	}
}

// TestSeriesPerPath counts what one path costs at each end: the figures
// docs/metrics.md gives for capacity planning. With classic buckets they
// are counted as a scrape of the text format counts them (each bucket,
// +Inf, _sum and _count a series); native only, as a Prometheus that
// scrapes native histograms stores them: a histogram is one series, and it
// must carry no classic buckets.
func TestSeriesPerPath(t *testing.T) {
	const pair = `target="rx:6464"`
	text := func(reg *prometheus.Registry) int {
		s, err := scrape.Gather(reg)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range s {
			if strings.Contains(k, pair) {
				n++
			}
		}
		return n
	}
	// pairMetrics calls f with every metric of the pair in a protobuf
	// gathering, as a Prometheus that scrapes native histograms gets them.
	pairMetrics := func(reg *prometheus.Registry, f func(family string, m *dto.Metric)) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if strings.Contains(m.String(), `value:"rx:6464"`) {
					f(mf.GetName(), m)
				}
			}
		}
	}
	native := func(reg *prometheus.Registry) (n int) {
		pairMetrics(reg, func(family string, m *dto.Metric) {
			if h := m.GetHistogram(); h != nil && (len(h.GetBucket()) > 0 || h.Schema == nil) {
				t.Errorf("%s: %d classic buckets, native schema %v; want none and one", family, len(h.GetBucket()), h.Schema)
			}
			n++
		})
		return n
	}
	// Classic buckets kept beside the native histograms
	// (always_scrape_classic_histograms): the text format's series and one
	// more for each native histogram.
	both := func(reg *prometheus.Registry) int {
		n := text(reg)
		pairMetrics(reg, func(_ string, m *dto.Metric) {
			if h := m.GetHistogram(); h != nil && h.Schema != nil {
				n++
			}
		})
		return n
	}
	for _, c := range []struct {
		h                Histograms
		count            func(*prometheus.Registry) int
		receiver, sender int
		depth            int // what UDPPROBE_DEPTH_METRICS adds to a receiver peer
	}{
		{ClassicAndNative, text, 80, 29, 39},
		{ClassicAndNative, both, 84, 30, 41},
		{NativeOnly, native, 20, 10, 4},
		{NativeOnly, text, 28, 12, 8}, // scraped without native histograms: _count, _sum and +Inf each
	} {
		for _, deep := range []bool{false, true} {
			reg := prometheus.NewPedanticRegistry()
			r := NewReceiver(reg, c.h)
			p := r.NewPeer("a", "rx:6464")
			p.OneWayDelay.Observe(.01) // a native histogram with a bucket in use
			want := c.receiver
			if deep {
				p.Deep()
				p.PDV.Observe(.001)
				want += c.depth
			}
			r.Export(slices.Values([]*ReceiverPeer{p}))
			if n := c.count(reg); n != want {
				t.Errorf("histograms %d, depth metrics %v: a receiver peer is %d series, docs/metrics.md says %d", c.h, deep, n, want)
			}
		}
		reg := prometheus.NewPedanticRegistry()
		NewSender(reg, "a", c.h).Target("rx:6464", roundTripsOnly(func() tracker.RoundTripCounts { return tracker.RoundTripCounts{} })).RTT.Observe(.01)
		if n := c.count(reg); n != c.sender {
			t.Errorf("histograms %d: a sender target is %d series, docs/metrics.md says %d", c.h, n, c.sender)
		}
	}
}

// TestClock: the clock's gauges are what the reader says at each scrape,
// and absent when it fails.
func TestClock(t *testing.T) {
	var sync bool
	var maxErr time.Duration
	var err error
	reg := prometheus.NewPedanticRegistry()
	NewClock(reg, func() (bool, time.Duration, error) { return sync, maxErr, err })
	for _, tc := range []struct {
		sync   bool
		maxErr time.Duration
		err    error
		want   string
	}{
		{true, 1500 * time.Microsecond, nil, "udpprobe_clock_max_error_seconds 0.0015\nudpprobe_clock_synchronised 1\n"},
		{false, 16 * time.Second, nil, "udpprobe_clock_max_error_seconds 16\nudpprobe_clock_synchronised 0\n"},
		{true, 0, errors.New("adjtimex: not permitted"), ""},
	} {
		sync, maxErr, err = tc.sync, tc.maxErr, tc.err
		s, gerr := scrape.Gather(reg)
		var got strings.Builder
		for _, name := range []string{"udpprobe_clock_max_error_seconds", "udpprobe_clock_synchronised"} {
			if v, ok := s.Value(name); ok {
				fmt.Fprintf(&got, "%s %v\n", name, v)
			}
		}
		if gerr != nil || got.String() != tc.want {
			t.Errorf("%+v: scraped %q, %v; want %q", tc, got.String(), gerr, tc.want)
		}
	}
}

// TestDocumented requires every metric to appear in the README's table and
// in docs/metrics.md.
func TestDocumented(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewSender(reg, "a", ClassicAndNative).Target("a:1", roundTripsOnly(func() tracker.RoundTripCounts { return tracker.RoundTripCounts{} }))
	NewClock(reg, func() (bool, time.Duration, error) { return false, time.Second, nil })
	r := NewReceiver(reg, ClassicAndNative)
	p := r.NewPeer("a", "rx:6464")
	p.Mark() // every per-peer metric, those exported on condition too
	p.KnowHops()
	p.Deep()
	p.Flow(1)
	r.Export(slices.Values([]*ReceiverPeer{p}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"../../README.md", "../../docs/metrics.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.Contains(string(b), "`"+mf.GetName()+"`") {
				t.Errorf("%s does not document %s", doc, mf.GetName())
			}
		}
	}
}

// BenchmarkSenderScrape: a scrape of a sender with 1,000 targets, native
// histograms only (11,000 series), gathered and written as text.
func BenchmarkSenderScrape(b *testing.B) {
	reg := prometheus.NewRegistry()
	s := NewSender(reg, "a", NativeOnly)
	for i := range 1000 {
		s.Target(fmt.Sprintf("127.0.%d.%d:6464", 1+i/250, 1+i%250),
			roundTripsOnly(func() tracker.RoundTripCounts { return tracker.RoundTripCounts{} })).RTT.Observe(.001)
	}
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// roundTripsOnly is what a scrape reads of a target that has sent nothing
// and whose round trips counts returns.
func roundTripsOnly(counts func() tracker.RoundTripCounts) TargetCounts {
	return TargetCounts{Sent: func() uint64 { return 0 }, RoundTrips: counts}
}

// TestReceiverPeerLayout: what a datagram in order changes of a peer's
// counts is in their first cache line, PDV in the second, and the whole
// takes a size class of Go's allocator whose objects start on a line
// (over 320 bytes, at most 384).
func TestReceiverPeerLayout(t *testing.T) {
	var p ReceiverPeer
	if size := unsafe.Sizeof(p); size <= 320 || size > 384 {
		t.Errorf("a ReceiverPeer is %d bytes, want 321 to 384", size)
	}
	if end := unsafe.Offsetof(p.RepliesSent) + unsafe.Sizeof(p.RepliesSent); end > 64 {
		t.Errorf("the counts a datagram in order changes end at byte %d, past the first line", end)
	}
	if end := unsafe.Offsetof(p.PDV) + unsafe.Sizeof(p.PDV); end > 128 {
		t.Errorf("PDV ends at byte %d, past the second line", end)
	}
}
