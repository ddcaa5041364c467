package receiver

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
	"github.com/udpprobe/udpprobe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// observed is what a test reads of a receiver or a table: its metrics, its
// registry and its log.
type observed struct {
	m    *metrics.Receiver
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
}

// observe gives opts short test defaults, fresh metrics and, unless opts
// names a logger, a log the test reads.
func observe(opts Options) (Options, observed) {
	o := observed{reg: prometheus.NewPedanticRegistry()}
	core, logs := observer.New(zapcore.InfoLevel)
	o.logs = logs
	opts = testDefaults(opts)
	if opts.Logger == nil {
		opts.Logger = zap.New(core)
	}
	opts.Metrics = metrics.NewReceiver(o.reg, metrics.ClassicAndNative)
	o.m = opts.Metrics
	return opts, o
}

// sample is what a scrape shows of the receiver's metric name (without the
// udpprobe_receiver_ prefix; a histogram's _count or _sum) for peer, or of
// a metric without labels for peer "". There must be such a series.
func (o observed) sample(t testing.TB, name, peer string) float64 {
	t.Helper()
	v, ok := o.value(t, name, peer)
	if !ok {
		t.Fatalf("no series of %s for peer %q", name, peer)
	}
	return v
}

// value is sample for a series that may not exist yet.
func (o observed) value(t testing.TB, name, peer string) (float64, bool) {
	t.Helper()
	s, err := scrape.Gather(o.reg)
	if err != nil {
		t.Fatal(err)
	}
	series := "udpprobe_receiver_" + name
	if peer != "" {
		series = scrape.Series(series, "sender", peer, "target", testTarget)
	}
	return s.Value(series)
}

// testReceiver is a Receiver on a loopback socket, observed.
type testReceiver struct {
	*Receiver
	observed
}

func newTestReceiver(t testing.TB, opts Options) *testReceiver {
	t.Helper()
	opts, o := observe(opts)
	opts.ListenAddress = "127.0.0.1:0"
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testReceiver{Receiver: r, observed: o}
}

// run runs r until the test ends.
func run(t *testing.T, r *testReceiver) { testproc.Background(t, "Run", r.Run) }

// testTarget is the target the test datagrams name this receiver by.
const testTarget = "rx:6464"

func datagram(t testing.TB, name string, session, seq uint64, flags wire.Flags) []byte {
	t.Helper()
	b := make([]byte, max(64, wire.MinSize(len(name), len(testTarget))))
	h := wire.Header{Name: []byte(name), Target: []byte(testTarget), Session: session, Seq: seq, Flags: flags}
	if err := wire.Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	return b
}

// testTable is a Table, observed, with the replies it sent.
type testTable struct {
	*Table
	observed
	replies replies
}

// replies records the replies a table sends, without allocating.
type replies struct {
	n    int
	last [wire.MaxSize]byte
	size int
	to   netip.AddrPort
	fail error // returned by every send, if set
	tc   int   // the traffic class of the last STAMP reply; -1: the socket's
}

func (r *replies) send(b []byte, to netip.AddrPort) error {
	if r.fail != nil {
		return r.fail
	}
	r.n++
	r.size = copy(r.last[:], b)
	r.to = to
	return nil
}

// sendSTAMP is send for a STAMP reply, keeping its traffic class.
func (r *replies) sendSTAMP(b []byte, to netip.AddrPort, tc int) error {
	r.tc = tc
	return r.send(b, to)
}

// header decodes the last reply.
func (r *replies) header(t testing.TB) wire.Header {
	t.Helper()
	var h wire.Header
	if err := wire.Decode(r.last[:r.size], &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// newTable is a table with short test defaults, logging to an observer
// unless opts names a logger.
func newTable(t testing.TB, opts Options) *testTable {
	t.Helper()
	opts, o := observe(opts)
	tt := &testTable{observed: o}
	var err error
	if tt.Table, err = NewTable(opts, tt.replies.send); err != nil {
		t.Fatal(err)
	}
	return tt
}

func testDefaults(opts Options) Options {
	if opts.LossTimeout == 0 {
		opts.LossTimeout = 100 * time.Millisecond
	}
	if opts.PeerExpiry == 0 {
		opts.PeerExpiry = time.Hour
	}
	if opts.MaxPeers == 0 {
		opts.MaxPeers = 10
	}
	if opts.ReceiveBuffer == 0 {
		opts.ReceiveBuffer = 8 << 20
	}
	return opts
}

// at is the instant ms milliseconds after the test's origin: wall0 on the
// wall clock, 0 on the monotonic one.
func at(ms float64) Instant {
	return Instant{Wall: wall0 + int64(ms*1e6), Mono: int64(ms * 1e6)}
}

// handle hands the table a datagram from nowhere in particular.
func (tt *testTable) handle(b []byte, at Instant) { tt.Handle(b, netip.AddrPort{}, at) }

// TestExposition drives the table with a scripted sequence and synthetic
// times and compares the exported text.
func TestExposition(t *testing.T) {
	tt := newTable(t, Options{})
	reg := tt.reg
	for i, seq := range []uint64{0, 1, 3, 4, 4, 2, 7} {
		tt.handle(datagram(t, "alpha", 1, seq, 0), at(float64(i)))
	}
	bad := datagram(t, "alpha", 1, 8, 0)
	bad[20] ^= 4
	tt.handle(bad, at(7))
	tt.handle([]byte("hello"), at(8))
	tt.handle(datagram(t, "alpha", 2, 0, 0), at(9))  // a restart, on probation
	tt.handle(datagram(t, "alpha", 2, 1, 0), at(10)) // confirmed
	tt.Housekeep(at(200))

	const want = `
# HELP udpprobe_receiver_packets_received_total First copies of data datagrams received.
# TYPE udpprobe_receiver_packets_received_total counter
udpprobe_receiver_packets_received_total{sender="alpha",target="rx:6464"} 8
# HELP udpprobe_receiver_packets_lost_total Sequence numbers declared lost after the loss timeout or on leaving the tracking window.
# TYPE udpprobe_receiver_packets_lost_total counter
udpprobe_receiver_packets_lost_total{sender="alpha",target="rx:6464"} 2
# HELP udpprobe_receiver_packets_duplicated_total Extra copies of sequence numbers already seen (RFC 5560).
# TYPE udpprobe_receiver_packets_duplicated_total counter
udpprobe_receiver_packets_duplicated_total{sender="alpha",target="rx:6464"} 1
# HELP udpprobe_receiver_packets_reordered_total First copies that arrived after a higher sequence number, within the loss timeout (RFC 4737).
# TYPE udpprobe_receiver_packets_reordered_total counter
udpprobe_receiver_packets_reordered_total{sender="alpha",target="rx:6464"} 1
# HELP udpprobe_receiver_packets_corrupted_total Datagrams of this protocol whose checksum failed; not attributed to a sender.
# TYPE udpprobe_receiver_packets_corrupted_total counter
udpprobe_receiver_packets_corrupted_total 1
# HELP udpprobe_receiver_peer_restarts_total New session ids seen from a known sender: sender restarts.
# TYPE udpprobe_receiver_peer_restarts_total counter
udpprobe_receiver_peer_restarts_total{sender="alpha",target="rx:6464"} 1
# HELP udpprobe_receiver_invalid_packets_total Datagrams that are not of this protocol, or not authenticated with the shared key, by reason.
# TYPE udpprobe_receiver_invalid_packets_total counter
udpprobe_receiver_invalid_packets_total{reason="auth"} 0
udpprobe_receiver_invalid_packets_total{reason="bad_header"} 0
udpprobe_receiver_invalid_packets_total{reason="bad_magic"} 0
udpprobe_receiver_invalid_packets_total{reason="bad_name"} 0
udpprobe_receiver_invalid_packets_total{reason="bad_version"} 0
udpprobe_receiver_invalid_packets_total{reason="too_short"} 1
udpprobe_receiver_invalid_packets_total{reason="unexpected_reply"} 0
# HELP udpprobe_receiver_loss_gap_length_packets Lengths of loss periods, maximal runs of consecutive lost sequence numbers (RFC 3357).
# TYPE udpprobe_receiver_loss_gap_length_packets histogram
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="1"} 0
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="2"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="3"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="5"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="10"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="20"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="50"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="100"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="1000"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="10000"} 1
udpprobe_receiver_loss_gap_length_packets_bucket{sender="alpha",target="rx:6464",le="+Inf"} 1
udpprobe_receiver_loss_gap_length_packets_sum{sender="alpha",target="rx:6464"} 2
udpprobe_receiver_loss_gap_length_packets_count{sender="alpha",target="rx:6464"} 1
# HELP udpprobe_receiver_peers Peers in the peer table: senders, each with the target it names this receiver by.
# TYPE udpprobe_receiver_peers gauge
udpprobe_receiver_peers 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"udpprobe_receiver_packets_received_total", "udpprobe_receiver_packets_lost_total",
		"udpprobe_receiver_packets_duplicated_total", "udpprobe_receiver_packets_reordered_total",
		"udpprobe_receiver_packets_corrupted_total", "udpprobe_receiver_peer_restarts_total",
		"udpprobe_receiver_invalid_packets_total", "udpprobe_receiver_loss_gap_length_packets",
		"udpprobe_receiver_peers"); err != nil {
		t.Fatal(err)
	}
	if got, want := tt.sample(t, "last_packet_timestamp_seconds", "alpha"), float64(at(10).Wall)/1e9; got != want {
		t.Fatalf("last packet %v, want %v", got, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func sendTo(t *testing.T, addr string, datagrams ...[]byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestGarbage sends random bytes at a running receiver: only the invalid
// counters may move, no peer or series appears, and nothing is logged.
func TestGarbage(t *testing.T) {
	r := newTestReceiver(t, Options{})
	reg, logs := r.reg, r.logs
	run(t, r)
	before, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 2000
	var junk [][]byte
	for range n {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		junk = append(junk, b)
	}
	sendTo(t, r.Addr().String(), junk...)
	invalid := func() (sum float64) {
		for _, reason := range metrics.InvalidReasons {
			sum += testutil.ToFloat64(r.m.Invalid.WithLabelValues(reason))
		}
		return sum
	}
	eventually(t, "every datagram counted", func() bool { return invalid() == n })
	after, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("series went from %d to %d", before, after)
	}
	if c := testutil.ToFloat64(r.m.PacketsCorrupted); c != 0 {
		t.Errorf("%v random datagrams taken for damaged probes", c)
	}
	if p := r.sample(t, "peers", ""); p != 0 {
		t.Errorf("%v peers from garbage", p)
	}
	for _, e := range logs.All() {
		if e.Message != "receiving" {
			t.Errorf("logged %q", e.Message)
		}
	}
}

// TestPeerTableBounded fills the table: later senders are counted as overflow
// and get no series, admitted ones keep counting, and silent ones expire with
// their series, exactly at their expiry.
func TestPeerTableBounded(t *testing.T) {
	tt := newTable(t, Options{MaxPeers: 3, PeerExpiry: 300 * time.Millisecond})
	for i := range 10 {
		for seq := range uint64(5) {
			tt.handle(datagram(t, "peer"+string(rune('a'+i)), 1, seq, 0), at(float64(i)))
		}
	}
	if got := testutil.ToFloat64(tt.m.PeerOverflow); got != 35 {
		t.Fatalf("overflow %v, want 35", got)
	}
	want := `
# HELP udpprobe_receiver_packets_received_total First copies of data datagrams received.
# TYPE udpprobe_receiver_packets_received_total counter
udpprobe_receiver_packets_received_total{sender="peera",target="rx:6464"} 5
udpprobe_receiver_packets_received_total{sender="peerb",target="rx:6464"} 5
udpprobe_receiver_packets_received_total{sender="peerc",target="rx:6464"} 5
`
	if err := testutil.GatherAndCompare(tt.reg, strings.NewReader(want), "udpprobe_receiver_packets_received_total"); err != nil {
		t.Fatal(err)
	}
	if n := peerSeries(t, tt.reg); n != 3*20 {
		t.Fatalf("%d series labelled by sender, want 20 for each of 3 peers", n)
	}
	tt.Housekeep(at(300)) // peera's last datagram came at 0 ms, peerc's at 2
	if got := tt.sample(t, "peers", ""); got != 2 || tt.Len() != 2 {
		t.Fatalf("%v peers exported, %d in the table 300 ms after the first one's last datagram; want 2", got, tt.Len())
	}
	tt.Housekeep(at(302))
	if got := tt.sample(t, "peers", ""); got != 0 || tt.Len() != 0 {
		t.Fatalf("%v peers exported, %d in the table after every expiry; want 0", got, tt.Len())
	}
	if n := peerSeries(t, tt.reg); n != 0 {
		t.Fatalf("%d series labelled by peer after expiry, want 0", n)
	}
	if got := len(tt.logs.FilterMessageSnippet("peer expired").All()); got != 3 {
		t.Errorf("%d expiry log lines, want 3", got)
	}
}

// peerSeries counts the series in reg that carry a peer label.
func peerSeries(t testing.TB, reg prometheus.Gatherer) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "sender" {
					n++
				}
			}
		}
	}
	return n
}

// TestSummary checks the periodic line reports the interval's counts.
func TestSummary(t *testing.T) {
	tt := newTable(t, Options{SummaryInterval: time.Second})
	tt.Housekeep(at(0))
	for i, seq := range []uint64{0, 1, 2, 5, 5} {
		tt.handle(datagram(t, "alpha", 1, seq, 0), at(float64(i)))
	}
	tt.Housekeep(at(999))
	if n := tt.logs.FilterMessage("summary").Len(); n != 0 {
		t.Fatalf("%d summary lines before the interval passed", n)
	}
	tt.Housekeep(at(1000))
	lines := tt.logs.FilterMessage("summary").All()
	if len(lines) != 1 {
		t.Fatalf("%d summary lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["sender"] != "alpha" || f["target"] != testTarget || f["received"] != uint64(4) || f["lost"] != uint64(2) ||
		f["duplicated"] != uint64(1) || f["loss_ratio"] != 2.0/6 {
		t.Fatalf("summary fields %v", f)
	}
}

// TestSessionEnded: a goodbye of the current session marks the peer's
// silence as a clean stop; a new session clears it, and a goodbye of the
// previous session, still draining, does not set it.
func TestSessionEnded(t *testing.T) {
	tt := newTable(t, Options{})
	ended := func() float64 { return tt.sample(t, "session_ended", "alpha") }
	tt.handle(datagram(t, "alpha", 1, 0, 0), at(0))
	if e := ended(); e != 0 {
		t.Fatalf("session_ended %v while sending", e)
	}
	tt.handle(datagram(t, "alpha", 1, 0, wire.FlagGoodbye), at(1))
	if e := ended(); e != 1 {
		t.Fatalf("session_ended %v after the goodbye", e)
	}
	tt.handle(datagram(t, "alpha", 2, 0, 0), at(2)) // a restart, on probation
	if e := ended(); e != 1 {
		t.Fatalf("session_ended %v with a new session on probation: it may be a replay", e)
	}
	tt.handle(datagram(t, "alpha", 2, 1, 0), at(2.5)) // confirmed
	if e := ended(); e != 0 {
		t.Fatalf("session_ended %v in a new session", e)
	}
	tt.handle(datagram(t, "alpha", 1, 0, wire.FlagGoodbye), at(3)) // the old session's, late
	if e, g := ended(), tt.sample(t, "goodbyes_total", ""); e != 0 || g != 2 {
		t.Fatalf("session_ended %v, goodbyes %v after the previous session's goodbye; want 0 and 2", e, g)
	}
}

// TestTargetsApart: one sender reaching this receiver by two targets (an
// IPv4 and an IPv6 address, say) is two peers with their own streams, not
// one stream with every datagram duplicated.
func TestTargetsApart(t *testing.T) {
	tt := newTable(t, Options{})
	for seq := range uint64(10) {
		for _, target := range []string{"127.0.0.1:6464", "[::1]:6464"} {
			tt.handle(targeted(t, "alpha", target, 1, seq), at(float64(seq)))
		}
	}
	tt.Housekeep(at(1000))
	s, err := scrape.Gather(tt.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"127.0.0.1:6464", "[::1]:6464"} {
		for name, want := range map[string]float64{"packets_received_total": 10, "packets_duplicated_total": 0, "packets_lost_total": 0} {
			series := scrape.Series("udpprobe_receiver_"+name, "sender", "alpha", "target", target)
			if got, ok := s.Value(series); !ok || got != want {
				t.Errorf("%s = %v (%v), want %v", series, got, ok, want)
			}
		}
	}
	if tt.Len() != 2 || tt.sample(t, "peers", "") != 2 {
		t.Fatalf("%d peers, want 2", tt.Len())
	}
}

// targeted is a data datagram of a sender naming the target it sent to.
func targeted(t testing.TB, name, target string, session, seq uint64) []byte {
	t.Helper()
	h := wire.Header{Name: []byte(name), Target: []byte(target), Session: session, Seq: seq}
	b := make([]byte, wire.MinSize(len(name), len(target)))
	if err := wire.Encode(b, &h); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoodbyeFromUnknownPeerIsIgnored(t *testing.T) {
	tt := newTable(t, Options{})
	tt.handle(datagram(t, "ghost", 1, 9, wire.FlagGoodbye), at(0))
	if n := tt.sample(t, "goodbyes_total", ""); tt.Len() != 0 || n != 0 {
		t.Fatalf("a goodbye created state: %d peers, %v goodbyes", tt.Len(), n)
	}
}

func TestHandleAllocatesNothing(t *testing.T) {
	tt := newTable(t, Options{})
	b := datagram(t, "alpha", 1, 0, 0)
	var seq uint64
	tt.handle(b, at(0)) // admits the peer
	allocs := testing.AllocsPerRun(1000, func() {
		seq++
		wire.PutSeq(b, seq)
		wire.Seal(b)
		tt.handle(b, at(float64(seq)))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
}

// TestSocketDrops stalls a receiver with the smallest buffer the kernel
// allows, overflows it, and requires the kernel's drop count to account
// exactly for every datagram that was not received.
func TestSocketDrops(t *testing.T) {
	if runtime.GOOS != "linux" {
		if os.Getenv("CI") == "true" {
			t.Fatal("SO_RXQ_OVFL needs Linux; CI must run this test")
		}
		t.Skip("SO_RXQ_OVFL is Linux-only")
	}
	r := newTestReceiver(t, Options{ReceiveBuffer: 1})
	const burst = 2000
	var ds [][]byte
	for seq := range uint64(burst) {
		ds = append(ds, datagram(t, "alpha", 1, seq, 0))
	}
	sendTo(t, r.Addr().String(), ds...) // nobody is reading: most are dropped
	run(t, r)
	received := func() float64 {
		n, _ := r.value(t, "packets_received_total", "alpha") // the peer is admitted with the first
		return n
	}
	eventually(t, "the queue drained", func() bool {
		n := received()
		time.Sleep(50 * time.Millisecond)
		return n > 0 && n == received()
	})
	// The kernel reports drops on the next datagram it queues.
	sendTo(t, r.Addr().String(), datagram(t, "alpha", 1, burst, 0))
	eventually(t, "the last datagram", func() bool { return received()+testutil.ToFloat64(r.m.SocketDrops) == burst+1 })
	drops := testutil.ToFloat64(r.m.SocketDrops)
	if drops == 0 || drops >= burst {
		t.Fatalf("%v drops of %d with a minimal buffer", drops, burst)
	}
	t.Logf("granted %v bytes: %v received, %v dropped by the socket", testutil.ToFloat64(r.m.ReceiveBuffer), received(), drops)
	// One sender, no reordering: every dropped number is local, none lost.
	local := func() float64 { return r.sample(t, "packets_dropped_locally_total", "alpha") }
	eventually(t, "the gap settled", func() bool { return local() == drops })
	if lost := r.sample(t, "packets_lost_total", "alpha"); lost != 0 {
		t.Errorf("%v socket drops counted as lost too", lost)
	}
	eventually(t, "a warning", func() bool { return r.logs.FilterMessageSnippet("socket receive buffer overflowed").Len() == 1 })
}

// TestAttribution: socket drops go to the gaps that span them, first come
// first served and never more than a gap holds; drops no gap claims within
// the loss timeout, and credit whose gaps were filled, are let go.
func TestAttribution(t *testing.T) {
	tt := newTable(t, Options{LossTimeout: 100 * time.Millisecond})
	for seq := range uint64(2) {
		tt.handle(datagram(t, "a", 1, seq, 0), at(1000))
		tt.handle(datagram(t, "b", 1, seq, 0), at(1000))
	}
	// 3 drops reported on a's datagram 4: a's gap {2, 3} takes 2; b's next
	// datagram reveals {2, 3} too and takes the last one.
	tt.SocketDropped(3, at(1010).Mono)
	tt.handle(datagram(t, "a", 1, 4, 0), at(1010))
	tt.handle(datagram(t, "b", 1, 4, 0), at(1011))
	// b's next gap opens after the drops: none of them can be in it.
	tt.handle(datagram(t, "b", 1, 6, 0), at(1012))
	tt.Housekeep(at(1200))
	want := func(peer string, lost, local float64) {
		t.Helper()
		if got := tt.sample(t, "packets_lost_total", peer); got != lost {
			t.Errorf("%s: lost %v, want %v", peer, got, lost)
		}
		if got := tt.sample(t, "packets_dropped_locally_total", peer); got != local {
			t.Errorf("%s: dropped locally %v, want %v", peer, got, local)
		}
	}
	want("a", 0, 2)
	want("b", 2, 1)

	// Drops unclaimed for a loss timeout are let go.
	tt.SocketDropped(5, at(1300).Mono)
	tt.handle(datagram(t, "a", 1, 6, 0), at(1400))
	tt.Housekeep(at(1600))
	want("a", 1, 2)

	// Credit for a gap whose number then arrives (the socket dropped a
	// duplicate, say) is let go once the gap is settled.
	tt.SocketDropped(1, at(1700).Mono)
	tt.handle(datagram(t, "a", 1, 8, 0), at(1700))
	tt.handle(datagram(t, "a", 1, 7, 0), at(1710))
	tt.Housekeep(at(1900))
	tt.handle(datagram(t, "a", 1, 10, 0), at(1910))
	tt.Housekeep(at(2100))
	want("a", 2, 2)
	if got := testutil.ToFloat64(tt.m.SocketDrops); got != 9 {
		t.Errorf("socket drops %v, want the kernel's 9", got)
	}
}
