package metrics

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/udpprobe/udpprobe/internal/tracker"
)

// Sender holds the sender's instruments. Every series carries the sender's
// name (sender), and those of one target the target as configured
// (target): the labels the receiver puts on what it got. Events (send
// errors, missed slots, lateness, round-trip times) are counted as they
// happen; the datagrams sent and the round-trip totals are read from each
// target at scrape time, so they have one source.
type Sender struct {
	SendErrors *prometheus.CounterVec
	// MissedSlots and ScheduleLateness are the sending loop's, which sends
	// to every target: when it falls behind, every target due falls behind.
	MissedSlots      prometheus.Counter
	ScheduleLateness prometheus.Observer
	// Targets is how many targets the sender probes now; Foreign counts
	// datagrams on its socket that came from none of them and name none.
	Targets prometheus.Gauge
	Foreign prometheus.Counter
	// DiscoveryFailures counts target resolutions and file_sd reads that
	// failed, by source: "dns" or "file".
	DiscoveryFailures *prometheus.CounterVec
	// ReflectorStateful is, per STAMP target, whether its reflector is
	// known to number its replies (stateful), which the split of its
	// round-trip losses by direction needs.
	ReflectorStateful *prometheus.GaugeVec
	roundTrips        *roundTrips
}

// SenderTarget holds one target's instruments, looked up once; RTT first,
// the one observed at every reply.
type SenderTarget struct {
	RTT        prometheus.Observer
	SendErrors prometheus.Counter
	// Stateful is a STAMP target's (see STAMPTarget); nil for others.
	Stateful prometheus.Gauge
}

// roundTripMetrics are the round-trip totals' series, one per target each.
var roundTripMetrics = []struct {
	name, help string
	value      func(*tracker.RoundTripCounts) uint64
}{
	{"replies_received_total", "First replies received within the loss timeout, when round trips are measured.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Answered }},
	{"replies_late_total", "Replies received after the loss timeout; their round trip stays counted as lost.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Late }},
	{"replies_duplicated_total", "Extra replies for a datagram already answered.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Duplicated }},
	{"roundtrip_packets_lost_total", "Data datagrams whose reply did not arrive within the loss timeout (RFC 7680), but for replies the receiver reports it held back.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Lost }},
	{"upstream_packets_lost_total", "Round-trip losses the receiver's count shows it never received: lost on the way there.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Upstream }},
	{"downstream_packets_lost_total", "Round-trip losses the receiver's count shows it received: the reply was lost on the way back.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Downstream }},
	{"replies_withheld_total", "Replies the receiver held back under its reflect rate limit, as its later replies report: neither lost nor measured.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Withheld }},
}

// NewSender registers on reg the metrics of the sender named name, its
// histograms exposed as h says.
func NewSender(reg prometheus.Registerer, name string, h Histograms) *Sender {
	on := component{reg: reg, sub: "sender", own: prometheus.Labels{"sender": name}}
	s := &Sender{
		SendErrors: on.counterVec("send_errors_total",
			"Data datagrams the kernel refused to send; they consume no sequence number.", "target"),
		MissedSlots: on.counter("missed_slots_total",
			"Schedule slots skipped, all targets together, because the sending loop fell more than one interval behind."),
		ScheduleLateness: on.histogramVec("schedule_lateness_seconds",
			"How late each data datagram was sent against its slot in its target's schedule, all targets together: the sending loop's pacing.",
			h.buckets(LatenessBuckets)).WithLabelValues(),
		Targets: on.gauge("targets", "Targets probed now: configured, resolved or discovered."),
		Foreign: on.counter("foreign_packets_total",
			"Datagrams on the sending socket from no target's address that name none of its targets."),
		DiscoveryFailures: on.counterVec("discovery_failures_total",
			"Target name resolutions and file_sd file reads that failed; the targets they gave last are kept.", "source"),
		ReflectorStateful: on.gaugeVec("stamp_reflector_stateful",
			"STAMP targets only: 1 once the reflector's replies show it numbers them itself (stateful), so that round-trip losses are split by direction from then on; 0 while they copy the test packets' numbers (stateless, or stateful with no loss on the way there yet): the losses have no direction.", "target"),
		roundTrips: &roundTrips{byTarget: make(map[string]TargetCounts),
			rtt: map[string]*histogram{}, rttBounds: h.buckets(DelayBuckets), sender: name},
	}
	// Round-trip times: a histogram per target, each observed about once
	// an interval, which client_golang's makes a string of cache misses
	// with many targets (histogram.go).
	s.roundTrips.rttDesc = on.desc("rtt_seconds",
		"Round-trip time of replies received within the loss timeout, on this host's monotonic clock.", "target")
	// Datagrams sent: a count of each target's own, added to as it sends,
	// rather than a counter of client_golang's, another cache line a
	// datagram with many targets.
	s.roundTrips.sent = on.desc("packets_sent_total", "Data datagrams handed to the kernel.", "target")
	s.roundTrips.invalid = on.desc("replies_invalid_total",
		"Datagrams on the sending socket from a target or naming one that are not a reply to its session: damaged, unauthenticated, of another session, or for a datagram never sent; all targets together.")
	for _, source := range []string{"dns", "file"} {
		s.DiscoveryFailures.WithLabelValues(source)
	}
	for _, m := range roundTripMetrics {
		s.roundTrips.descs = append(s.roundTrips.descs, on.desc(m.name, m.help, "target"))
	}
	reg.MustRegister(s.roundTrips)
	return s
}

// TargetCounts are what a scrape reads of one target, from the scraping
// goroutine: the data datagrams sent, and the round-trip totals.
type TargetCounts struct {
	Sent       func() uint64
	RoundTrips func() tracker.RoundTripCounts
}

// Target returns the instruments of one target, creating its series at
// zero; counts are read at every scrape.
func (s *Sender) Target(target string, counts TargetCounts) SenderTarget {
	r := s.roundTrips
	rtt := newHistogram(r.rttDesc, pairLabels(r.sender, target), r.rttBounds)
	r.mu.Lock()
	r.byTarget[target] = counts
	r.rtt[target] = rtt
	r.mu.Unlock()
	return SenderTarget{
		SendErrors: s.SendErrors.WithLabelValues(target),
		RTT:        rtt,
	}
}

// STAMPTarget is Target for a STAMP target, which has the gauge of its
// reflector's numbering besides.
func (s *Sender) STAMPTarget(target string, counts TargetCounts) SenderTarget {
	m := s.Target(target, counts)
	m.Stateful = s.ReflectorStateful.WithLabelValues(target)
	return m
}

// Forget deletes the series of a target that is no longer probed; the
// invalid replies it had count on in the sender's total.
func (s *Sender) Forget(target string) {
	s.roundTrips.mu.Lock()
	if counts, ok := s.roundTrips.byTarget[target]; ok {
		s.roundTrips.invalidGone += counts.RoundTrips().Invalid
	}
	delete(s.roundTrips.byTarget, target)
	delete(s.roundTrips.rtt, target)
	s.roundTrips.mu.Unlock()
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{
		s.SendErrors, s.ReflectorStateful,
	} {
		v.DeleteLabelValues(target)
	}
}

// roundTrips is the collector of what is read of each target at scrape
// time: the datagrams sent, the round trips' totals and times, and the
// invalid replies of all targets, those forgotten included.
type roundTrips struct {
	descs       []*prometheus.Desc // in the order of roundTripMetrics
	sent        *prometheus.Desc
	invalid     *prometheus.Desc
	rttDesc     *prometheus.Desc
	rttBounds   []float64 // the classic buckets; nil: native only
	sender      string    // the sender label's value
	mu          sync.Mutex
	byTarget    map[string]TargetCounts
	rtt         map[string]*histogram
	invalidGone uint64 // of the targets forgotten
}

func (r *roundTrips) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range r.descs {
		ch <- d
	}
	ch <- r.sent
	ch <- r.invalid
	ch <- r.rttDesc
}

func (r *roundTrips) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	targets := maps.Clone(r.byTarget)
	invalid := r.invalidGone
	rtt := slices.Collect(maps.Values(r.rtt))
	r.mu.Unlock()
	for _, h := range rtt {
		ch <- h
	}
	for target, counts := range targets {
		ch <- prometheus.MustNewConstMetric(r.sent, prometheus.CounterValue, float64(counts.Sent()), target)
		c := counts.RoundTrips()
		invalid += c.Invalid
		for i, m := range roundTripMetrics {
			ch <- prometheus.MustNewConstMetric(r.descs[i], prometheus.CounterValue, float64(m.value(&c)), target)
		}
	}
	ch <- prometheus.MustNewConstMetric(r.invalid, prometheus.CounterValue, float64(invalid))
}
