package metrics

import (
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Receiver holds the receiver's instruments. Series labelled by peer are
// created when a peer is admitted to the peer table and deleted when it
// expires, so the series count is bounded by the table's size.
type Receiver struct {
	peers *peerSet

	PacketsCorrupted prometheus.Counter
	Invalid          *prometheus.CounterVec
	PeerOverflow     prometheus.Counter
	SocketDrops      prometheus.Counter
	Peers            prometheus.Gauge
	ReceiveBuffer    prometheus.Gauge
}

// peerVecs are the vectors of the per-peer series. They are templates, not
// registered: a peer's instruments are made by them and removed from them
// at once (a removed instrument goes on working), and a peerSet exports
// them. The vectors' maps then never hold more than one peer, and the
// set's own map shrinks when peers are forgotten, which Go maps do not do
// by themselves: 10,000 peers come and gone leave nothing behind.
type peerVecs struct {
	PacketsReceived   *prometheus.CounterVec
	PacketsLost       *prometheus.CounterVec
	PacketsDuplicated *prometheus.CounterVec
	PacketsReordered  *prometheus.CounterVec
	PacketsLate       *prometheus.CounterVec
	PacketsStray      *prometheus.CounterVec
	DroppedLocally    *prometheus.CounterVec
	PeerRestarts      *prometheus.CounterVec
	Resyncs           *prometheus.CounterVec
	Goodbyes          *prometheus.CounterVec
	LastPacket        *prometheus.GaugeVec
	GapLength         *prometheus.HistogramVec
	ReorderExtent     *prometheus.HistogramVec
	OneWayDelay       *prometheus.HistogramVec
	ClockSkew         *prometheus.CounterVec
	Jitter            *prometheus.GaugeVec
	IPDV              *prometheus.HistogramVec
	RepliesSent       *prometheus.CounterVec
	RepliesLimited    *prometheus.CounterVec
	ReplyErrors       *prometheus.CounterVec
}

// ReceiverPeer holds one peer's instruments, looked up once on admission so
// the receive path does no label lookups.
type ReceiverPeer struct {
	Received, Lost, Duplicated, Reordered, Late, Stray, Restarts, Resyncs, Goodbyes prometheus.Counter
	DroppedLocally                                                                  prometheus.Counter
	ClockSkew, RepliesSent, RepliesLimited, ReplyErrors                             prometheus.Counter
	LastPacket, Jitter                                                              prometheus.Gauge
	GapLength, ReorderExtent, OneWayDelay, IPDV                                     prometheus.Observer

	all []prometheus.Metric // the 20 above, for collection
}

// NewReceiver registers the receiver's metrics on reg.
func NewReceiver(reg prometheus.Registerer) *Receiver {
	const sub = "receiver"
	tmpl := nopRegisterer{}
	v := peerVecs{
		PacketsReceived: counterVec(tmpl, sub, "packets_received_total",
			"First copies of data datagrams received, per sender.", "peer"),
		PacketsLost: counterVec(tmpl, sub, "packets_lost_total",
			"Sequence numbers declared lost after the loss timeout or on leaving the tracking window.", "peer"),
		PacketsDuplicated: counterVec(tmpl, sub, "packets_duplicated_total",
			"Extra copies of sequence numbers already seen (RFC 5560).", "peer"),
		PacketsReordered: counterVec(tmpl, sub, "packets_reordered_total",
			"First copies that arrived after a higher sequence number, within the loss timeout (RFC 4737).", "peer"),
		PacketsLate: counterVec(tmpl, sub, "packets_late_total",
			"Datagrams that arrived after they had been declared lost; they stay counted as lost.", "peer"),
		PacketsStray: counterVec(tmpl, sub, "packets_stray_total",
			"Datagrams whose sequence number was more than 2^31 from the session's highest and that the next datagram did not follow: not counted otherwise (RFC 3550 A.1).", "peer"),
		DroppedLocally: counterVec(tmpl, sub, "packets_dropped_locally_total",
			"Missing sequence numbers attributed to this host's socket drops rather than the network; not in packets_lost_total.", "peer"),
		PeerRestarts: counterVec(tmpl, sub, "peer_restarts_total",
			"New session ids seen from a known sender: sender restarts.", "peer"),
		Resyncs: counterVec(tmpl, sub, "sequence_resyncs_total",
			"Implausible sequence jumps, confirmed by the next datagram, taken as a new start instead of loss.", "peer"),
		Goodbyes: counterVec(tmpl, sub, "goodbyes_total",
			"Sessions a sender ended with a goodbye datagram.", "peer"),
		LastPacket: gaugeVec(tmpl, sub, "last_packet_timestamp_seconds",
			"Unix time of the last valid datagram from the sender.", "peer"),
		GapLength: histogramVec(tmpl, sub, "loss_gap_length_packets",
			"Lengths of loss periods, maximal runs of consecutive lost sequence numbers (RFC 3357).",
			GapLengthBuckets, "peer"),
		ReorderExtent: histogramVec(tmpl, sub, "reorder_extent_packets",
			"Reordering extent of reordered datagrams, in arrivals (RFC 4737).",
			ReorderExtentBuckets, "peer"),
		OneWayDelay: histogramVec(tmpl, sub, "one_way_delay_seconds",
			"One-way delay of first copies received in time: receive time minus the sender's send time. Only meaningful with synchronised clocks.",
			DelayBuckets, "peer"),
		ClockSkew: counterVec(tmpl, sub, "clock_skew_events_total",
			"Datagrams that arrived before their send time by this host's clock: the clocks are not synchronised; no delay was recorded.", "peer"),
		Jitter: gaugeVec(tmpl, sub, "jitter_seconds",
			"RFC 3550 interarrival jitter of the current session, from in-order datagrams; independent of clock offset.", "peer"),
		IPDV: histogramVec(tmpl, sub, "ipdv_seconds",
			"Absolute IP packet delay variation between consecutive sequence numbers received in order (RFC 3393, RFC 5481).",
			VariationBuckets, "peer"),
		RepliesSent: counterVec(tmpl, sub, "replies_sent_total",
			"Replies reflected to the sender, when reflecting.", "peer"),
		RepliesLimited: counterVec(tmpl, sub, "replies_rate_limited_total",
			"Replies not sent because the peer exceeded the reflect rate limit; the sender counts them as downstream loss.", "peer"),
		ReplyErrors: counterVec(tmpl, sub, "reply_errors_total",
			"Replies this host failed to send; the sender counts them as downstream loss.", "peer"),
	}
	r := &Receiver{
		peers: &peerSet{vecs: v, byName: make(map[string]*ReceiverPeer)},
		PacketsCorrupted: counter(reg, sub, "packets_corrupted_total",
			"Datagrams of this protocol whose checksum failed; not attributed to a sender."),
		Invalid: counterVec(reg, sub, "invalid_packets_total",
			"Datagrams that are not of this protocol, or not authenticated with the shared key, by reason.", "reason"),
		PeerOverflow: counter(reg, sub, "peer_overflow_packets_total",
			"Valid datagrams ignored because the peer table was full."),
		SocketDrops: counter(reg, sub, "socket_drops_total",
			"Datagrams the kernel dropped because the receive socket buffer was full: a local problem, not network loss."),
		Peers:         gauge(reg, sub, "peers", "Senders in the peer table."),
		ReceiveBuffer: gauge(reg, sub, "receive_buffer_bytes", "Receive socket buffer size granted by the kernel."),
	}
	for _, reason := range InvalidReasons {
		r.Invalid.WithLabelValues(reason)
	}
	reg.MustRegister(r.peers)
	return r
}

// nopRegisterer registers nothing: it makes the template vectors.
type nopRegisterer struct{}

func (nopRegisterer) Register(prometheus.Collector) error  { return nil }
func (nopRegisterer) MustRegister(...prometheus.Collector) {}
func (nopRegisterer) Unregister(prometheus.Collector) bool { return false }

// Peer returns one peer's instruments, creating its series at zero if the
// peer has none yet.
func (r *Receiver) Peer(peer string) *ReceiverPeer {
	s := r.peers
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.byName[peer]; p != nil {
		return p
	}
	v := &s.vecs
	p := &ReceiverPeer{
		Received:       v.PacketsReceived.WithLabelValues(peer),
		Lost:           v.PacketsLost.WithLabelValues(peer),
		Duplicated:     v.PacketsDuplicated.WithLabelValues(peer),
		Reordered:      v.PacketsReordered.WithLabelValues(peer),
		Late:           v.PacketsLate.WithLabelValues(peer),
		Stray:          v.PacketsStray.WithLabelValues(peer),
		DroppedLocally: v.DroppedLocally.WithLabelValues(peer),
		Restarts:       v.PeerRestarts.WithLabelValues(peer),
		Resyncs:        v.Resyncs.WithLabelValues(peer),
		Goodbyes:       v.Goodbyes.WithLabelValues(peer),
		LastPacket:     v.LastPacket.WithLabelValues(peer),
		GapLength:      v.GapLength.WithLabelValues(peer),
		ReorderExtent:  v.ReorderExtent.WithLabelValues(peer),
		OneWayDelay:    v.OneWayDelay.WithLabelValues(peer),
		ClockSkew:      v.ClockSkew.WithLabelValues(peer),
		Jitter:         v.Jitter.WithLabelValues(peer),
		IPDV:           v.IPDV.WithLabelValues(peer),
		RepliesSent:    v.RepliesSent.WithLabelValues(peer),
		RepliesLimited: v.RepliesLimited.WithLabelValues(peer),
		ReplyErrors:    v.ReplyErrors.WithLabelValues(peer),
	}
	p.all = []prometheus.Metric{p.Received, p.Lost, p.Duplicated, p.Reordered, p.Late, p.Stray, p.DroppedLocally,
		p.Restarts, p.Resyncs, p.Goodbyes, p.LastPacket, p.GapLength.(prometheus.Metric),
		p.ReorderExtent.(prometheus.Metric), p.OneWayDelay.(prometheus.Metric), p.ClockSkew, p.Jitter,
		p.IPDV.(prometheus.Metric), p.RepliesSent, p.RepliesLimited, p.ReplyErrors}
	for _, c := range s.vecs.all() {
		c.DeleteLabelValues(peer)
	}
	s.byName[peer] = p
	s.peak = max(s.peak, len(s.byName))
	return p
}

// DeletePeer removes every series of peer.
func (r *Receiver) DeletePeer(peer string) {
	s := r.peers
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byName, peer)
	if s.peak > 64 && len(s.byName) <= s.peak/4 {
		s.byName = maps.Collect(maps.All(s.byName)) // a new map, sized for what is left
		s.peak = len(s.byName)
	}
}

// peerSet is the collector of the peers' series.
type peerSet struct {
	vecs   peerVecs
	mu     sync.Mutex
	byName map[string]*ReceiverPeer
	peak   int // the most entries byName has held since it was last rebuilt
}

// vec is what the set needs of a template vector.
type vec interface {
	prometheus.Collector
	DeleteLabelValues(...string) bool
}

func (v *peerVecs) all() []vec {
	return []vec{
		v.PacketsReceived, v.PacketsLost, v.PacketsDuplicated, v.PacketsReordered, v.PacketsLate, v.PacketsStray,
		v.DroppedLocally,
		v.PeerRestarts, v.Resyncs, v.Goodbyes, v.LastPacket, v.GapLength, v.ReorderExtent,
		v.OneWayDelay, v.ClockSkew, v.Jitter, v.IPDV, v.RepliesSent, v.RepliesLimited, v.ReplyErrors,
	}
}

// Describe sends the descriptions of the 20 per-peer metrics.
func (s *peerSet) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.vecs.all() {
		c.Describe(ch)
	}
}

// Collect sends every series of every peer. It copies the set first, so a
// slow scrape does not hold up the receiver admitting or forgetting a peer.
func (s *peerSet) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	peers := make([]*ReceiverPeer, 0, len(s.byName))
	for _, p := range s.byName {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, p := range peers {
		for _, m := range p.all {
			ch <- m
		}
	}
}
