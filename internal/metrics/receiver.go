package metrics

import (
	"iter"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Receiver holds the receiver's instruments. The series labelled by peer
// are those of the peers the receiver's table holds at the moment of a
// scrape (see Export): a peer's series appear when it is admitted and go
// when it is forgotten, so their count is bounded by the table's size.
type Receiver struct {
	peers *peerSet

	PacketsCorrupted prometheus.Counter
	Invalid          *prometheus.CounterVec
	PeerOverflow     prometheus.Counter
	SocketDrops      prometheus.Counter
	ReceiveBuffer    prometheus.Gauge
	// Goodbyes counts the goodbye datagrams of known sessions (a peer's
	// SessionEnded says whether its current one ended so); ReplyErrors the
	// replies this host failed to send, whoever they were for.
	Goodbyes, ReplyErrors prometheus.Counter
	// Hellos counts the hellos received; HellosAnswered those answered.
	Hellos, HellosAnswered prometheus.Counter
	// DelayMaxError is the bound on both clocks' maximum errors together
	// under which one-way delays are recorded; +Inf: no bound.
	DelayMaxError prometheus.Gauge
}

// ReceiverPeer holds the instruments of one peer, a sender and the target
// it names this receiver by, made once on admission so the
// receive path does no label lookups. Counters and gauges are plain atomic
// values, written by the receiver and read at scrape time; the summary
// line reads the same values, so every number has one source.
type ReceiverPeer struct {
	// What a datagram in order changes comes first, in the first cache
	// line (PDV in the next): with many peers, each one's is cold by its
	// next datagram (TestReceiverPeerLayout).
	Received           Counter
	LastPacket, Jitter Gauge
	OneWayDelay, IPDV  prometheus.Observer
	RepliesSent        Counter
	// PDV is one of the depth metrics (Deep), observed as a datagram in
	// order ends an interval.
	PDV prometheus.Observer

	Lost, Duplicated, Reordered, Late, Stray, Restarts, Resyncs Counter
	NameConflicts                                               Counter
	DroppedLocally                                              Counter
	DelayUnsynchronised, RepliesLimited                         Counter
	SessionEnded                                                Gauge
	GapLength, ReorderExtent                                    prometheus.Observer
	sender, target                                              string
	// What the path did to the traffic class its sender set: exported
	// once Mark is called, at the first datagram that says a traffic
	// class was set, so that a sender that sets none costs no series for
	// them.
	Remarked, CEMarked, ECNBleached Counter
	marked                          atomic.Bool
	// The path's length in hops and how often it changed: exported once
	// KnowHops is called, at the first datagram whose hop count is known.
	HopCount    Gauge
	PathChanges Counter
	hops        atomic.Bool
	// The depth metrics, exported once Deep is called, at admission by a
	// receiver that exports them: PDV, n-reordering and outage time.
	LossPeriod              prometheus.Observer
	NReordered, Unavailable Counter
	deep                    atomic.Bool
	// The counts of each of the sender's flows (Flow): exported once a
	// flow other than 0 is seen, so that a sender of one flow costs no
	// series for them.
	flowMu sync.Mutex
	flows  []*FlowCounts
	many   atomic.Bool
}

// FlowCounts are the counts of one of a sender's flows to a target.
type FlowCounts struct {
	flow           string
	Received, Lost Counter
}

// DropFlow forgets the counts of flow, and their series: the flow's
// stream is gone (the receiver forgot it), though others of the pair live.
func (p *ReceiverPeer) DropFlow(flow uint16) {
	label := strconv.FormatUint(uint64(flow), 10)
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	// A copy: a scrape may be reading the slice it replaces.
	p.flows = slices.DeleteFunc(slices.Clone(p.flows), func(f *FlowCounts) bool { return f.flow == label })
}

// Flow returns the counts of flow, made at zero the first time.
func (p *ReceiverPeer) Flow(flow uint16) *FlowCounts {
	label := strconv.FormatUint(uint64(flow), 10)
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	for _, f := range p.flows {
		if f.flow == label {
			return f
		}
	}
	f := &FlowCounts{flow: label}
	p.flows = append(p.flows, f)
	if flow > 0 {
		p.many.Store(true)
	}
	return f
}

// Mark exports the peer's traffic-class counters from now on.
func (p *ReceiverPeer) Mark() { p.marked.Store(true) }

// KnowHops exports the peer's hop count and path changes from now on.
func (p *ReceiverPeer) KnowHops() { p.hops.Store(true) }

// Deep exports the peer's depth metrics from now on.
func (p *ReceiverPeer) Deep() { p.deep.Store(true) }

// Counter is a count written by one goroutine and read by others.
type Counter struct{ atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.Add(1) }

// Gauge is a value written by one goroutine and read by others.
type Gauge struct{ bits atomic.Uint64 }

// Set stores v.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Value returns the value last stored.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// peerMetric declares one per-peer metric: its name and help, and the field
// of ReceiverPeer that holds a peer's instrument, whose type is the
// metric's kind (*Counter, *Gauge, or *prometheus.Observer for a histogram
// with the given buckets).
type peerMetric struct {
	name, help string
	buckets    []float64
	field      func(*ReceiverPeer) any
	// only, if set, says whether a peer exports the metric now.
	only func(*ReceiverPeer) bool
}

// marked says whether a peer's sender set a traffic class.
func marked(p *ReceiverPeer) bool { return p.marked.Load() }

// hopsKnown says whether a peer's hop count is known.
func hopsKnown(p *ReceiverPeer) bool { return p.hops.Load() }

// deep says whether a peer exports the depth metrics.
func deep(p *ReceiverPeer) bool { return p.deep.Load() }

// peerMetrics are the receiver's per-peer metrics, all labelled by sender
// and target (peerLabels).
var peerMetrics = []peerMetric{
	{"packets_received_total", "First copies of data datagrams received.", nil,
		func(p *ReceiverPeer) any { return &p.Received }, nil},
	{"packets_lost_total", "Sequence numbers declared lost after the loss timeout or on leaving the tracking window.", nil,
		func(p *ReceiverPeer) any { return &p.Lost }, nil},
	{"packets_duplicated_total", "Extra copies of sequence numbers already seen (RFC 5560).", nil,
		func(p *ReceiverPeer) any { return &p.Duplicated }, nil},
	{"packets_reordered_total", "First copies that arrived after a higher sequence number, within the loss timeout (RFC 4737).", nil,
		func(p *ReceiverPeer) any { return &p.Reordered }, nil},
	{"packets_late_total", "Datagrams that arrived after they had been declared lost; they stay counted as lost.", nil,
		func(p *ReceiverPeer) any { return &p.Late }, nil},
	{"packets_stray_total", "Datagrams implausibly far from their session's highest sequence number (more than 2^31, or ahead of what the stream's rate allows), or of a session gone by, that the next datagram did not follow: not counted otherwise (RFC 3550 A.1).", nil,
		func(p *ReceiverPeer) any { return &p.Stray }, nil},
	{"packets_dropped_locally_total", "Missing sequence numbers attributed to this host's socket drops rather than the network; not in packets_lost_total.", nil,
		func(p *ReceiverPeer) any { return &p.DroppedLocally }, nil},
	{"peer_restarts_total", "New session ids seen from a known sender: sender restarts.", nil,
		func(p *ReceiverPeer) any { return &p.Restarts }, nil},
	{"name_conflict_packets_total", "Datagrams of an earlier session that kept arriving past the loss timeout after a newer one began: two live senders share the name, and their counts merge.", nil,
		func(p *ReceiverPeer) any { return &p.NameConflicts }, nil},
	{"sequence_resyncs_total", "Implausible sequence jumps, confirmed by the next datagram, taken as a new start instead of loss.", nil,
		func(p *ReceiverPeer) any { return &p.Resyncs }, nil},
	{"last_packet_timestamp_seconds", "Unix time of the last valid datagram from the sender.", nil,
		func(p *ReceiverPeer) any { return &p.LastPacket }, nil},
	{"session_ended", "1 once the sender's current session has ended with a goodbye, else 0: its silence is a clean stop, not an outage.", nil,
		func(p *ReceiverPeer) any { return &p.SessionEnded }, nil},
	{"loss_gap_length_packets", "Lengths of loss periods, maximal runs of consecutive lost sequence numbers (RFC 3357).", GapLengthBuckets,
		func(p *ReceiverPeer) any { return &p.GapLength }, nil},
	{"reorder_extent_packets", "Reordering extent of reordered datagrams, in arrivals (RFC 4737).", ReorderExtentBuckets,
		func(p *ReceiverPeer) any { return &p.ReorderExtent }, nil},
	{"loss_period_seconds", "Durations of loss periods: from the send time of the last datagram before a maximal run of lost numbers to that of the first after it, by the sender's clock; a run at a session's start or end, with no datagram on one side, is not timed; exported where the receiver exports its depth metrics.", OutageBuckets,
		func(p *ReceiverPeer) any { return &p.LossPeriod }, deep},
	{"unavailable_seconds_total", "Seconds of the sender's clock in which more than half the datagrams sent were lost (ITU-T Y.1563's severely errored seconds), each counted once all its datagrams are decided; exported where the receiver exports its depth metrics.", nil,
		func(p *ReceiverPeer) any { return &p.Unavailable }, deep},
	{"packets_n_reordered_total", "Reordered datagrams that the 3 first copies arriving just before them all overtook (RFC 4737 section 5, n = 3: enough to trigger TCP's fast retransmit); exported where the receiver exports its depth metrics.", nil,
		func(p *ReceiverPeer) any { return &p.NReordered }, deep},
	{"one_way_delay_seconds", "One-way delay of first copies received in time: receive time minus the sender's send time, recorded only while both clocks say they are synchronised within one_way_delay_max_error_seconds.", DelayBuckets,
		func(p *ReceiverPeer) any { return &p.OneWayDelay }, nil},
	{"one_way_delay_unsynchronised_total", "First copies received in time whose one-way delay was not recorded: a clock said it was not synchronised, the clocks' maximum errors added up to more than one_way_delay_max_error_seconds, or the datagram arrived before its send time by this host's clock.", nil,
		func(p *ReceiverPeer) any { return &p.DelayUnsynchronised }, nil},
	{"jitter_seconds", "RFC 3550 interarrival jitter of the current session, from in-order datagrams; independent of clock offset.", nil,
		func(p *ReceiverPeer) any { return &p.Jitter }, nil},
	{"ipdv_seconds", "Absolute IP packet delay variation between consecutive sequence numbers received in order (RFC 3393, RFC 5481).", VariationBuckets,
		func(p *ReceiverPeer) any { return &p.IPDV }, nil},
	{"pdv_seconds", "Packet delay variation (RFC 5481 section 4.2) of first copies received in time: each one-way delay less the least of its interval (10 s, or 1,024 datagrams if sooner); independent of clock offset; exported where the receiver exports its depth metrics.", VariationBuckets,
		func(p *ReceiverPeer) any { return &p.PDV }, deep},
	{"replies_sent_total", "Replies reflected to the sender, when reflecting.", nil,
		func(p *ReceiverPeer) any { return &p.RepliesSent }, nil},
	{"replies_rate_limited_total", "Replies not sent because the peer exceeded the reflect rate limit; the sender counts them as downstream loss.", nil,
		func(p *ReceiverPeer) any { return &p.RepliesLimited }, nil},
	{"packets_remarked_total", "Datagrams that arrived with another DSCP than their sender set; exported once the sender sets a traffic class (a DSCP or an ECN codepoint).", nil,
		func(p *ReceiverPeer) any { return &p.Remarked }, marked},
	{"packets_ce_marked_total", "Datagrams that arrived marked ECN Congestion Experienced: a queue on the path was filling; exported once the sender sets a traffic class.", nil,
		func(p *ReceiverPeer) any { return &p.CEMarked }, marked},
	{"packets_ecn_bleached_total", "Datagrams sent ECN-capable (ECT) that arrived Not-ECT: the path cleared the ECN field; exported once the sender sets a traffic class.", nil,
		func(p *ReceiverPeer) any { return &p.ECNBleached }, marked},
	{"hop_count", "Routers between the sender and this host: the hop limit the sender says it sent with less the one that arrived, as it has stood for the last 3 datagrams or more; exported once known.", nil,
		func(p *ReceiverPeer) any { return &p.HopCount }, hopsKnown},
	{"path_changes_total", "Changes of the hop count that lasted 3 datagrams or more: the path changed; exported with the hop count.", nil,
		func(p *ReceiverPeer) any { return &p.PathChanges }, hopsKnown},
}

// flowMetrics are the per-flow metrics, labelled by peerLabels and flow.
var flowMetrics = []struct {
	name, help string
	field      func(*FlowCounts) *Counter
}{
	{"flow_packets_received_total", "First copies received, by the sender's flow (its source port); exported once a sender uses more than one.",
		func(f *FlowCounts) *Counter { return &f.Received }},
	{"flow_packets_lost_total", "Sequence numbers declared lost, by the sender's flow; exported once a sender uses more than one.",
		func(f *FlowCounts) *Counter { return &f.Lost }},
}

// peerLabels label every per-peer series: the sender's name and the target
// it sent to, as it named it. The sender's own series carry the same two,
// so a rule can join what a sender sent to a target with what the
// receiver got.
var peerLabels = []string{"sender", "target"}

// pairLabels are the label pairs of a series of the pair of sender and
// target, for a metric written by hand (histogram), sorted by name as
// peerLabels are: the receiver's per-peer series and the sender's per
// target, whose sender label is constant.
func pairLabels(sender, target string) []*dto.LabelPair {
	return []*dto.LabelPair{
		{Name: proto.String(peerLabels[0]), Value: proto.String(sender)},
		{Name: proto.String(peerLabels[1]), Value: proto.String(target)},
	}
}

// NewReceiver registers the receiver's metrics on reg, its histograms
// exposed as h says.
func NewReceiver(reg prometheus.Registerer, h Histograms) *Receiver {
	on := component{reg: reg, sub: "receiver"}
	set := &peerSet{
		count: on.desc("peers", "Peers in the peer table: senders, each with the target it names this receiver by."),
	}
	for _, m := range flowMetrics {
		set.flows = append(set.flows, on.desc(m.name, m.help, append(peerLabels, "flow")...))
	}
	for _, m := range peerMetrics {
		var k kind
		k.desc = on.desc(m.name, m.help, peerLabels...)
		switch m.field(&ReceiverPeer{}).(type) {
		case *Counter, *Gauge:
		case *prometheus.Observer:
			k.histogram, k.bounds = true, h.buckets(m.buckets)
		default:
			panic("metrics: per-peer metric " + m.name + " has a field of no known kind")
		}
		set.kinds = append(set.kinds, k)
	}
	r := &Receiver{
		peers: set,
		PacketsCorrupted: on.counter("packets_corrupted_total",
			"Datagrams of this protocol whose checksum failed; not attributed to a sender."),
		Invalid: on.counterVec("invalid_packets_total",
			"Datagrams that are not of this protocol, or not authenticated with the shared key, by reason.", "reason"),
		PeerOverflow: on.counter("peer_overflow_packets_total",
			"Valid datagrams ignored because the peer table was full."),
		SocketDrops: on.counter("socket_drops_total",
			"Datagrams the kernel dropped because the receive socket buffer was full: a local problem, not network loss."),
		ReceiveBuffer: on.gauge("receive_buffer_bytes", "Receive socket buffer size granted by the kernel."),
		Goodbyes: on.counter("goodbyes_total",
			"Goodbye datagrams of known sessions (a sender sends a few copies when it stops), all peers together; a peer's session_ended says whether its current session ended so."),
		ReplyErrors: on.counter("reply_errors_total",
			"Replies this host failed to send, all peers together: a local problem; each sender counts its own as downstream loss."),
		Hellos: on.counter("hellos_total",
			"Hellos received: datagrams asking this node for its name; they belong to no stream."),
		DelayMaxError: on.gauge("one_way_delay_max_error_seconds",
			"The most the sender's and this host's clocks' maximum errors may add up to for a one-way delay to be recorded, as the receiver is configured; +Inf: every delay that is not negative is."),
		HellosAnswered: on.counter("hellos_answered_total",
			"Hellos answered with this node's name: only a node with a name that reflects answers, within the reply budget."),
	}
	for _, reason := range InvalidReasons {
		r.Invalid.WithLabelValues(reason)
	}
	reg.MustRegister(r.peers)
	return r
}

// NewPeer makes the instruments of a sender reaching this receiver as
// target, at zero. They are exported while the peers given to Export
// include them. The histograms are udpprobe's own (histogram.go), each
// observed once a datagram of its peer: with many peers, client_golang's
// would cost a string of cache misses an observation.
func (r *Receiver) NewPeer(sender, target string) *ReceiverPeer {
	p := &ReceiverPeer{sender: sender, target: target}
	labels := pairLabels(sender, target)
	for i, m := range peerMetrics {
		if k := r.peers.kinds[i]; k.histogram {
			*m.field(p).(*prometheus.Observer) = newHistogram(k.desc, labels, k.bounds)
		}
	}
	return p
}

// Export sets the peers whose series every scrape exports: peers is called
// at each scrape, from the scraping goroutine, and must be safe for that.
func (r *Receiver) Export(peers iter.Seq[*ReceiverPeer]) {
	r.peers.mu.Lock()
	r.peers.list = peers
	r.peers.mu.Unlock()
}

// kind is how a per-peer metric is described: by its desc, and for a
// histogram the classic buckets it has (nil: native only).
type kind struct {
	desc      *prometheus.Desc
	histogram bool
	bounds    []float64
}

// peerSet is the collector of the peer count and the peers' series.
type peerSet struct {
	count *prometheus.Desc
	kinds []kind             // in the order of peerMetrics
	flows []*prometheus.Desc // in the order of flowMetrics
	mu    sync.Mutex
	list  iter.Seq[*ReceiverPeer]
}

// Describe sends the descriptions of the per-peer metrics.
func (s *peerSet) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.count
	for _, d := range s.flows {
		ch <- d
	}
	for _, k := range s.kinds {
		ch <- k.desc
	}
}

// Collect sends the peer count and every series of every peer. It takes
// the peers first, so a slow scrape does not hold up the receiver
// admitting or forgetting one.
func (s *peerSet) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	list := s.list
	s.mu.Unlock()
	var peers []*ReceiverPeer
	if list != nil {
		for p := range list {
			peers = append(peers, p)
		}
	}
	ch <- prometheus.MustNewConstMetric(s.count, prometheus.GaugeValue, float64(len(peers)))
	for _, p := range peers {
		for i, m := range peerMetrics {
			if m.only != nil && !m.only(p) {
				continue
			}
			k := s.kinds[i]
			switch f := m.field(p).(type) {
			case *Counter:
				ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, float64(f.Load()), p.sender, p.target)
			case *Gauge:
				ch <- prometheus.MustNewConstMetric(k.desc, prometheus.GaugeValue, f.Value(), p.sender, p.target)
			case *prometheus.Observer:
				ch <- (*f).(prometheus.Metric)
			}
		}
		if !p.many.Load() {
			continue
		}
		p.flowMu.Lock()
		flows := p.flows
		p.flowMu.Unlock()
		for _, f := range flows {
			for i, m := range flowMetrics {
				ch <- prometheus.MustNewConstMetric(s.flows[i], prometheus.CounterValue, float64(m.field(f).Load()), p.sender, p.target, f.flow)
			}
		}
	}
}
