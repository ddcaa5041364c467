package metrics

import (
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/udpprobe/udpprobe/internal/tracker"
)

// Sender holds the sender's instruments, labelled by target (peer). Events
// (datagrams sent, send errors, missed slots, lateness, round-trip times)
// are counted as they happen; the round-trip totals are read from each
// target's tracker at scrape time, so they have one source.
type Sender struct {
	PacketsSent      *prometheus.CounterVec
	SendErrors       *prometheus.CounterVec
	MissedSlots      *prometheus.CounterVec
	ScheduleLateness *prometheus.HistogramVec
	RTT              *prometheus.HistogramVec
	roundTrips       *roundTrips
}

// SenderPeer holds one target's instruments, looked up once.
type SenderPeer struct {
	PacketsSent, SendErrors, MissedSlots prometheus.Counter
	ScheduleLateness, RTT                prometheus.Observer
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
	{"replies_invalid_total", "Datagrams on the sending socket that are not a reply to this session: foreign, damaged, unauthenticated, or for a datagram never sent.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Invalid }},
	{"roundtrip_packets_lost_total", "Data datagrams whose reply did not arrive within the loss timeout (RFC 7680).",
		func(c *tracker.RoundTripCounts) uint64 { return c.Lost }},
	{"upstream_packets_lost_total", "Round-trip losses the receiver's count shows it never received: lost on the way there.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Upstream }},
	{"downstream_packets_lost_total", "Round-trip losses the receiver's count shows it received: the reply was lost on the way back.",
		func(c *tracker.RoundTripCounts) uint64 { return c.Downstream }},
}

// NewSender registers the sender's metrics on reg.
func NewSender(reg prometheus.Registerer) *Sender {
	const sub = "sender"
	s := &Sender{
		PacketsSent: counterVec(reg, sub, "packets_sent_total",
			"Data datagrams handed to the kernel, per target.", "peer"),
		SendErrors: counterVec(reg, sub, "send_errors_total",
			"Data datagrams the kernel refused to send; they consume no sequence number.", "peer"),
		MissedSlots: counterVec(reg, sub, "missed_slots_total",
			"Schedule slots skipped because the sender fell more than one interval behind.", "peer"),
		ScheduleLateness: histogramVec(reg, sub, "schedule_lateness_seconds",
			"How late each data datagram was sent against its slot in the schedule.",
			LatenessBuckets, "peer"),
		RTT: histogramVec(reg, sub, "rtt_seconds",
			"Round-trip time of replies received within the loss timeout, on this host's monotonic clock.",
			DelayBuckets, "peer"),
		roundTrips: &roundTrips{byPeer: make(map[string]func() tracker.RoundTripCounts)},
	}
	for _, m := range roundTripMetrics {
		s.roundTrips.descs = append(s.roundTrips.descs,
			prometheus.NewDesc(prometheus.BuildFQName(namespace, sub, m.name), m.help, []string{"peer"}, nil))
	}
	reg.MustRegister(s.roundTrips)
	return s
}

// Peer returns the instruments of one target, creating its series at zero.
// counts returns the target's round-trip totals; it is called at every
// scrape, from the scraping goroutine.
func (s *Sender) Peer(peer string, counts func() tracker.RoundTripCounts) SenderPeer {
	s.roundTrips.mu.Lock()
	s.roundTrips.byPeer[peer] = counts
	s.roundTrips.mu.Unlock()
	return SenderPeer{
		PacketsSent:      s.PacketsSent.WithLabelValues(peer),
		SendErrors:       s.SendErrors.WithLabelValues(peer),
		MissedSlots:      s.MissedSlots.WithLabelValues(peer),
		ScheduleLateness: s.ScheduleLateness.WithLabelValues(peer),
		RTT:              s.RTT.WithLabelValues(peer),
	}
}

// roundTrips is the collector of the round-trip totals.
type roundTrips struct {
	descs  []*prometheus.Desc // in the order of roundTripMetrics
	mu     sync.Mutex
	byPeer map[string]func() tracker.RoundTripCounts
}

func (r *roundTrips) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range r.descs {
		ch <- d
	}
}

func (r *roundTrips) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	peers := maps.Clone(r.byPeer)
	r.mu.Unlock()
	for peer, counts := range peers {
		c := counts()
		for i, m := range roundTripMetrics {
			ch <- prometheus.MustNewConstMetric(r.descs[i], prometheus.CounterValue, float64(m.value(&c)), peer)
		}
	}
}
