package e2e

import (
	"cmp"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
	"github.com/udpprobe/udpprobe/internal/tracker"
)

const lossTimeout = 200 * time.Millisecond

type harness struct {
	t   *testing.T
	reg *prometheus.Registry
	rcv *receiver.Receiver
	m   *metrics.Receiver
}

// startReceiver runs a receiver on loopback until the test ends.
func startReceiver(t *testing.T) *harness { return startReceiverWith(t, receiver.Options{}) }

// startReceiverWith runs a receiver with o, whose zero fields get the
// harness's defaults, until the test ends.
func startReceiverWith(t *testing.T, o receiver.Options) *harness {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewReceiver(reg, metrics.ClassicAndNative)
	o.ListenAddress, o.LossTimeout, o.Metrics = cmp.Or(o.ListenAddress, "127.0.0.1:0"), lossTimeout, m
	o.MaxPeers = cmp.Or(o.MaxPeers, 10)
	o.PeerExpiry = cmp.Or(o.PeerExpiry, time.Hour)
	o.ReceiveBuffer = cmp.Or(o.ReceiveBuffer, 4<<20)
	o.ReflectRate = cmp.Or(o.ReflectRate, 10000)
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	rcv, err := receiver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	testproc.Background(t, "receiver", rcv.Run)
	return &harness{t: t, reg: reg, rcv: rcv, m: m}
}

// startRelay runs a relay in front of the receiver until the test ends,
// damaging probes as up says and replies as down says.
func (h *harness) startRelay(up impair.Config, down ...impair.Config) *impair.Relay {
	h.t.Helper()
	var d impair.Config
	if len(down) > 0 {
		d = down[0]
	}
	r, err := impair.New("127.0.0.1:0", h.rcv.Addr().String(), up, d)
	if err != nil {
		h.t.Fatal(err)
	}
	r.Start()
	h.t.Cleanup(func() { r.Close() })
	return r
}

// send runs a sender to target for d, then stops it, which sends its goodbye.
func send(t *testing.T, target, name string, session uint64, rate float64, d time.Duration) {
	t.Helper()
	sendWith(t, sender.Options{Targets: []string{target}, Name: name, Session: session, Rate: rate}, d)
}

// sent is what a sender exported for its first target, scraped when it
// had stopped.
type sent struct {
	packets uint64
	rttN    uint64 // round-trip times observed
	rttSum  float64
	rt      tracker.RoundTripCounts
}

// sendWith runs a sender with opts (and a test logger and metrics) for d,
// then stops it, and returns what it exported for its first target. With
// RoundTrip it returns once the sender has waited for the last replies.
func sendWith(t *testing.T, opts sender.Options, d time.Duration) sent {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewSender(reg, opts.Name, metrics.ClassicAndNative)
	opts.PayloadSize, opts.LossTimeout = 144, lossTimeout
	opts.Logger, opts.Metrics = zaptest.NewLogger(t), m
	s, err := sender.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	peer := opts.Targets[0]
	samples, err := scrape.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	series := func(name string) float64 {
		v, ok := samples.Value(scrape.Series("udpprobe_sender_"+name, "sender", opts.Name, "target", peer))
		if !ok {
			t.Fatalf("no %s series for %s", name, peer)
		}
		return v
	}
	return sent{packets: uint64(series("packets_sent_total")), rttN: uint64(series("rtt_seconds_count")),
		rttSum: series("rtt_seconds_sum"), rt: scrapeRoundTrip(t, samples, peer)}
}

// scrapeRoundTrip reads a target's round-trip totals from a scrape of a
// sender with that one target: the invalid replies are the sender's.
func scrapeRoundTrip(t *testing.T, s scrape.Samples, peer string) tracker.RoundTripCounts {
	t.Helper()
	var c tracker.RoundTripCounts
	for name, f := range map[string]*uint64{
		"replies_received_total":        &c.Answered,
		"replies_late_total":            &c.Late,
		"replies_duplicated_total":      &c.Duplicated,
		"roundtrip_packets_lost_total":  &c.Lost,
		"upstream_packets_lost_total":   &c.Upstream,
		"downstream_packets_lost_total": &c.Downstream,
		"replies_withheld_total":        &c.Withheld,
	} {
		v, n := s.Sum("udpprobe_sender_"+name, "target", peer)
		ok := n == 1
		if !ok {
			t.Fatalf("no %s series for %s", name, peer)
		}
		*f = uint64(v)
	}
	v, n := s.Sum("udpprobe_sender_replies_invalid_total")
	if n != 1 {
		t.Fatalf("%d replies_invalid_total series, want the sender's one", n)
	}
	c.Invalid = uint64(v)
	return c
}

// delivered waits until the relay has been idle for 100 ms, so that the
// datagrams a stopped sender wrote last are in the record, and returns it.
func delivered(t *testing.T, r *impair.Relay) []impair.Delivery {
	t.Helper()
	prev := -1
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		d := r.Delivered()
		if len(d) == prev {
			return d
		}
		prev = len(d)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the relay never went idle")
	return nil
}

// counts is what the receiver exported for one peer; corrupted, socket
// drops and goodbyes are the receiver's own, all peers together.
type counts struct {
	received, lost, duplicated, reordered, late, restarts, goodbyes uint64
	gapCount, gapSum, extentCount, extentSum                        uint64
	corrupted, socketDrops, droppedLocally                          uint64
}

func (h *harness) counts(peer string) counts {
	h.t.Helper()
	s := h.gather()
	c := func(name string) uint64 { v, _ := value(s, name, peer); return uint64(v) }
	return counts{
		received: c("packets_received_total"), lost: c("packets_lost_total"),
		duplicated: c("packets_duplicated_total"), reordered: c("packets_reordered_total"),
		late: c("packets_late_total"), restarts: c("peer_restarts_total"), goodbyes: c("goodbyes_total"),
		corrupted: c("packets_corrupted_total"), socketDrops: c("socket_drops_total"),
		droppedLocally: c("packets_dropped_locally_total"),
		gapCount:       c("loss_gap_length_packets_count"), gapSum: c("loss_gap_length_packets_sum"),
		extentCount: c("reorder_extent_packets_count"), extentSum: c("reorder_extent_packets_sum"),
	}
}

// value is what a scrape shows of the receiver's metric name (without the
// udpprobe_receiver_ prefix; a histogram's _count or _sum) for peer, and
// whether there is such a series. A metric without labels is read as it
// is, whatever peer says.
func (h *harness) value(name, peer string) (float64, bool) {
	h.t.Helper()
	return value(h.gather(), name, peer)
}

// gather scrapes the receiver's registry.
func (h *harness) gather() scrape.Samples {
	h.t.Helper()
	s, err := scrape.Gather(h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// value reads a receiver's metric from a scrape, as harness.value does.
func value(s scrape.Samples, name, peer string) (float64, bool) {
	if v, ok := s.Value("udpprobe_receiver_" + name); ok {
		return v, true
	}
	// The sender's name, whatever target it sent to: the relay's address,
	// or the receiver's.
	v, n := s.Sum("udpprobe_receiver_"+name, "sender", peer)
	return v, n > 0
}

// sample is value for a series that must exist.
func (h *harness) sample(name, peer string) float64 {
	h.t.Helper()
	v, ok := h.value(name, peer)
	if !ok {
		h.t.Fatalf("no series of %s for peer %q", name, peer)
	}
	return v
}

// waitFor polls until the peer's received, lost and dropped locally reach
// expected (every covered sequence number decided), then returns the counts. Exactness is
// asserted by the caller on every field; this only waits out the timeout.
func (h *harness) waitFor(peer string, expected uint64) counts {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := h.counts(peer)
		if c.received+c.lost+c.droppedLocally >= expected || time.Now().After(deadline) {
			time.Sleep(2 * lossTimeout) // anything still in flight would show now
			return h.counts(peer)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sum(xs []uint64) (s uint64) {
	for _, x := range xs {
		s += x
	}
	return s
}

func (h *harness) assertCounts(got, want counts) {
	h.t.Helper()
	if got != want {
		h.t.Errorf("receiver exported\n %+v\nground truth\n %+v", got, want)
	}
}

// waitUntil polls cond, briefly apart, for up to 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}
