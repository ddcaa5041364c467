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

// ReceiverPeer holds one peer's instruments, looked up once on admission so
// the receive path does no label lookups.
type ReceiverPeer struct {
	Received, Lost, Duplicated, Reordered, Late, Stray, Restarts, Resyncs, Goodbyes prometheus.Counter
	DroppedLocally                                                                  prometheus.Counter
	ClockSkew, RepliesSent, RepliesLimited, ReplyErrors                             prometheus.Counter
	LastPacket, Jitter                                                              prometheus.Gauge
	GapLength, ReorderExtent, OneWayDelay, IPDV                                     prometheus.Observer

	all []prometheus.Metric // every instrument above, for collection
}

// peerMetric declares one per-peer metric: its name, help and kind, and
// the field of ReceiverPeer that holds a peer's instrument (a
// *prometheus.Counter, *prometheus.Gauge or *prometheus.Observer; an
// Observer is a histogram with the given buckets).
type peerMetric struct {
	name, help string
	buckets    []float64
	field      func(*ReceiverPeer) any
}

// peerMetrics are the receiver's per-peer metrics, all labelled by peer.
var peerMetrics = []peerMetric{
	{"packets_received_total", "First copies of data datagrams received, per sender.", nil,
		func(p *ReceiverPeer) any { return &p.Received }},
	{"packets_lost_total", "Sequence numbers declared lost after the loss timeout or on leaving the tracking window.", nil,
		func(p *ReceiverPeer) any { return &p.Lost }},
	{"packets_duplicated_total", "Extra copies of sequence numbers already seen (RFC 5560).", nil,
		func(p *ReceiverPeer) any { return &p.Duplicated }},
	{"packets_reordered_total", "First copies that arrived after a higher sequence number, within the loss timeout (RFC 4737).", nil,
		func(p *ReceiverPeer) any { return &p.Reordered }},
	{"packets_late_total", "Datagrams that arrived after they had been declared lost; they stay counted as lost.", nil,
		func(p *ReceiverPeer) any { return &p.Late }},
	{"packets_stray_total", "Datagrams whose sequence number was more than 2^31 from the session's highest and that the next datagram did not follow: not counted otherwise (RFC 3550 A.1).", nil,
		func(p *ReceiverPeer) any { return &p.Stray }},
	{"packets_dropped_locally_total", "Missing sequence numbers attributed to this host's socket drops rather than the network; not in packets_lost_total.", nil,
		func(p *ReceiverPeer) any { return &p.DroppedLocally }},
	{"peer_restarts_total", "New session ids seen from a known sender: sender restarts.", nil,
		func(p *ReceiverPeer) any { return &p.Restarts }},
	{"sequence_resyncs_total", "Implausible sequence jumps, confirmed by the next datagram, taken as a new start instead of loss.", nil,
		func(p *ReceiverPeer) any { return &p.Resyncs }},
	{"goodbyes_total", "Sessions a sender ended with a goodbye datagram.", nil,
		func(p *ReceiverPeer) any { return &p.Goodbyes }},
	{"last_packet_timestamp_seconds", "Unix time of the last valid datagram from the sender.", nil,
		func(p *ReceiverPeer) any { return &p.LastPacket }},
	{"loss_gap_length_packets", "Lengths of loss periods, maximal runs of consecutive lost sequence numbers (RFC 3357).", GapLengthBuckets,
		func(p *ReceiverPeer) any { return &p.GapLength }},
	{"reorder_extent_packets", "Reordering extent of reordered datagrams, in arrivals (RFC 4737).", ReorderExtentBuckets,
		func(p *ReceiverPeer) any { return &p.ReorderExtent }},
	{"one_way_delay_seconds", "One-way delay of first copies received in time: receive time minus the sender's send time. Only meaningful with synchronised clocks.", DelayBuckets,
		func(p *ReceiverPeer) any { return &p.OneWayDelay }},
	{"clock_skew_events_total", "Datagrams that arrived before their send time by this host's clock: the clocks are not synchronised; no delay was recorded.", nil,
		func(p *ReceiverPeer) any { return &p.ClockSkew }},
	{"jitter_seconds", "RFC 3550 interarrival jitter of the current session, from in-order datagrams; independent of clock offset.", nil,
		func(p *ReceiverPeer) any { return &p.Jitter }},
	{"ipdv_seconds", "Absolute IP packet delay variation between consecutive sequence numbers received in order (RFC 3393, RFC 5481).", VariationBuckets,
		func(p *ReceiverPeer) any { return &p.IPDV }},
	{"replies_sent_total", "Replies reflected to the sender, when reflecting.", nil,
		func(p *ReceiverPeer) any { return &p.RepliesSent }},
	{"replies_rate_limited_total", "Replies not sent because the peer exceeded the reflect rate limit; the sender counts them as downstream loss.", nil,
		func(p *ReceiverPeer) any { return &p.RepliesLimited }},
	{"reply_errors_total", "Replies this host failed to send; the sender counts them as downstream loss.", nil,
		func(p *ReceiverPeer) any { return &p.ReplyErrors }},
}

// vec is a template vector of one per-peer metric. The vectors are not
// registered: a peer's instruments are made by them and removed from them
// at once (a removed instrument goes on working), and a peerSet exports
// them. The vectors' maps then never hold more than one peer, and the
// set's own map shrinks when peers are forgotten, which Go maps do not do
// by themselves: 10,000 peers come and gone leave nothing behind.
type vec interface {
	prometheus.Collector
	DeleteLabelValues(...string) bool
}

// newVec makes the template vector of m, of the kind its field says.
func newVec(m peerMetric) vec {
	const sub = "receiver"
	tmpl := nopRegisterer{}
	switch m.field(&ReceiverPeer{}).(type) {
	case *prometheus.Counter:
		return counterVec(tmpl, sub, m.name, m.help, "peer")
	case *prometheus.Gauge:
		return gaugeVec(tmpl, sub, m.name, m.help, "peer")
	case *prometheus.Observer:
		return histogramVec(tmpl, sub, m.name, m.help, m.buckets, "peer")
	}
	panic("metrics: per-peer metric " + m.name + " has a field of no known kind")
}

// instrument makes peer's instrument from v and stores it in field.
func instrument(v vec, field any, peer string) prometheus.Metric {
	switch f := field.(type) {
	case *prometheus.Counter:
		*f = v.(*prometheus.CounterVec).WithLabelValues(peer)
		return *f
	case *prometheus.Gauge:
		*f = v.(*prometheus.GaugeVec).WithLabelValues(peer)
		return *f
	case *prometheus.Observer:
		*f = v.(*prometheus.HistogramVec).WithLabelValues(peer)
		return (*f).(prometheus.Metric)
	}
	panic("metrics: unknown instrument field")
}

// NewReceiver registers the receiver's metrics on reg.
func NewReceiver(reg prometheus.Registerer) *Receiver {
	const sub = "receiver"
	set := &peerSet{byName: make(map[string]*ReceiverPeer)}
	for _, m := range peerMetrics {
		set.vecs = append(set.vecs, newVec(m))
	}
	r := &Receiver{
		peers: set,
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
	p := &ReceiverPeer{all: make([]prometheus.Metric, len(peerMetrics))}
	for i, m := range peerMetrics {
		p.all[i] = instrument(s.vecs[i], m.field(p), peer)
		s.vecs[i].DeleteLabelValues(peer)
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
	vecs   []vec // the template vectors, in the order of peerMetrics
	mu     sync.Mutex
	byName map[string]*ReceiverPeer
	peak   int // the most entries byName has held since it was last rebuilt
}

// Describe sends the descriptions of the per-peer metrics.
func (s *peerSet) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range s.vecs {
		v.Describe(ch)
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
