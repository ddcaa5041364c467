package e2e

import (
	"cmp"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
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
	m := metrics.NewReceiver(reg)
	o.ListenAddress, o.LossTimeout, o.Metrics = "127.0.0.1:0", lossTimeout, m
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rcv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
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

// sent is what a sender exported for its first target.
type sent struct {
	PacketsSent prometheus.Counter
	RTT         prometheus.Observer
	rt          tracker.RoundTripCounts // as scraped
}

// sendWith runs a sender with opts (and a test logger and metrics) for d,
// then stops it, and returns what it exported for its first target. With
// RoundTrip it returns once the sender has waited for the last replies.
func sendWith(t *testing.T, opts sender.Options, d time.Duration) sent {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewSender(reg)
	opts.PayloadSize, opts.LossTimeout = 100, lossTimeout
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
	return sent{PacketsSent: m.PacketsSent.WithLabelValues(peer), RTT: m.RTT.WithLabelValues(peer),
		rt: scrapeRoundTrip(t, reg, peer)}
}

// scrapeRoundTrip reads a target's round-trip totals from reg.
func scrapeRoundTrip(t *testing.T, reg prometheus.Gatherer, peer string) tracker.RoundTripCounts {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var c tracker.RoundTripCounts
	fields := map[string]*uint64{
		"udpprobe_sender_replies_received_total":        &c.Answered,
		"udpprobe_sender_replies_late_total":            &c.Late,
		"udpprobe_sender_replies_duplicated_total":      &c.Duplicated,
		"udpprobe_sender_replies_invalid_total":         &c.Invalid,
		"udpprobe_sender_roundtrip_packets_lost_total":  &c.Lost,
		"udpprobe_sender_upstream_packets_lost_total":   &c.Upstream,
		"udpprobe_sender_downstream_packets_lost_total": &c.Downstream,
	}
	found := 0
	for _, mf := range mfs {
		f := fields[mf.GetName()]
		if f == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" && l.GetValue() == peer {
					*f = uint64(m.GetCounter().GetValue())
					found++
				}
			}
		}
	}
	if found != len(fields) {
		t.Fatalf("%d of the %d round-trip series of %s exported", found, len(fields), peer)
	}
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

// counts is what the receiver exported for one peer.
type counts struct {
	received, lost, duplicated, reordered, late, restarts, goodbyes uint64
	gapCount, gapSum, extentCount, extentSum                        uint64
	corrupted, socketDrops                                          uint64
}

func (h *harness) counts(peer string) counts {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	byName := map[string]*dto.Metric{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() == peer {
				byName[mf.GetName()] = m
			}
		}
	}
	c := func(name string) uint64 { return uint64(byName["udpprobe_receiver_"+name].GetCounter().GetValue()) }
	hist := func(name string) (uint64, uint64) {
		m := byName["udpprobe_receiver_"+name].GetHistogram()
		return m.GetSampleCount(), uint64(m.GetSampleSum())
	}
	got := counts{
		received: c("packets_received_total"), lost: c("packets_lost_total"),
		duplicated: c("packets_duplicated_total"), reordered: c("packets_reordered_total"),
		late: c("packets_late_total"), restarts: c("peer_restarts_total"), goodbyes: c("goodbyes_total"),
		corrupted: c("packets_corrupted_total"), socketDrops: c("socket_drops_total"),
	}
	got.gapCount, got.gapSum = hist("loss_gap_length_packets")
	got.extentCount, got.extentSum = hist("reorder_extent_packets")
	return got
}

// waitFor polls until the peer's received+lost reaches expected (every
// covered sequence number decided), then returns the counts. Exactness is
// asserted by the caller on every field; this only waits out the timeout.
func (h *harness) waitFor(peer string, expected uint64) counts {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := h.counts(peer)
		if c.received+c.lost >= expected || time.Now().After(deadline) {
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
