package metrics

import "github.com/prometheus/client_golang/prometheus"

// Receiver holds the receiver's instruments. Series labelled by peer are
// created when a peer is admitted to the peer table and deleted when it
// expires, so the series count is bounded by the table's size.
type Receiver struct {
	PacketsReceived   *prometheus.CounterVec
	PacketsLost       *prometheus.CounterVec
	PacketsDuplicated *prometheus.CounterVec
	PacketsReordered  *prometheus.CounterVec
	PacketsLate       *prometheus.CounterVec
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
	Received, Lost, Duplicated, Reordered, Late, Restarts, Resyncs, Goodbyes prometheus.Counter
	DroppedLocally                                                           prometheus.Counter
	ClockSkew, RepliesSent, RepliesLimited, ReplyErrors                      prometheus.Counter
	LastPacket, Jitter                                                       prometheus.Gauge
	GapLength, ReorderExtent, OneWayDelay, IPDV                              prometheus.Observer
}

// NewReceiver registers the receiver's metrics on reg.
func NewReceiver(reg prometheus.Registerer) *Receiver {
	const sub = "receiver"
	r := &Receiver{
		PacketsReceived: counterVec(reg, sub, "packets_received_total",
			"First copies of data datagrams received, per sender.", "peer"),
		PacketsLost: counterVec(reg, sub, "packets_lost_total",
			"Sequence numbers declared lost after the loss timeout or on leaving the tracking window.", "peer"),
		PacketsDuplicated: counterVec(reg, sub, "packets_duplicated_total",
			"Extra copies of sequence numbers already seen (RFC 5560).", "peer"),
		PacketsReordered: counterVec(reg, sub, "packets_reordered_total",
			"First copies that arrived after a higher sequence number, within the loss timeout (RFC 4737).", "peer"),
		PacketsLate: counterVec(reg, sub, "packets_late_total",
			"Datagrams that arrived after they had been declared lost; they stay counted as lost.", "peer"),
		DroppedLocally: counterVec(reg, sub, "packets_dropped_locally_total",
			"Missing sequence numbers attributed to this host's socket drops rather than the network; not in packets_lost_total.", "peer"),
		PeerRestarts: counterVec(reg, sub, "peer_restarts_total",
			"New session ids seen from a known sender: sender restarts.", "peer"),
		Resyncs: counterVec(reg, sub, "sequence_resyncs_total",
			"Implausible forward sequence jumps taken as a new start instead of loss.", "peer"),
		Goodbyes: counterVec(reg, sub, "goodbyes_total",
			"Sessions a sender ended with a goodbye datagram.", "peer"),
		LastPacket: gaugeVec(reg, sub, "last_packet_timestamp_seconds",
			"Unix time of the last valid datagram from the sender.", "peer"),
		GapLength: histogramVec(reg, sub, "loss_gap_length_packets",
			"Lengths of loss periods, maximal runs of consecutive lost sequence numbers (RFC 3357).",
			GapLengthBuckets, "peer"),
		ReorderExtent: histogramVec(reg, sub, "reorder_extent_packets",
			"Reordering extent of reordered datagrams, in arrivals (RFC 4737).",
			ReorderExtentBuckets, "peer"),
		OneWayDelay: histogramVec(reg, sub, "one_way_delay_seconds",
			"One-way delay of first copies received in time: receive time minus the sender's send time. Only meaningful with synchronised clocks.",
			DelayBuckets, "peer"),
		ClockSkew: counterVec(reg, sub, "clock_skew_events_total",
			"Datagrams that arrived before their send time by this host's clock: the clocks are not synchronised; no delay was recorded.", "peer"),
		Jitter: gaugeVec(reg, sub, "jitter_seconds",
			"RFC 3550 interarrival jitter of the current session, from in-order datagrams; independent of clock offset.", "peer"),
		IPDV: histogramVec(reg, sub, "ipdv_seconds",
			"Absolute IP packet delay variation between consecutive sequence numbers received in order (RFC 3393, RFC 5481).",
			VariationBuckets, "peer"),
		RepliesSent: counterVec(reg, sub, "replies_sent_total",
			"Replies reflected to the sender (UDPPROBE_REFLECT).", "peer"),
		RepliesLimited: counterVec(reg, sub, "replies_rate_limited_total",
			"Replies not sent because the peer exceeded UDPPROBE_REFLECT_RATE; the sender counts them as downstream loss.", "peer"),
		ReplyErrors: counterVec(reg, sub, "reply_errors_total",
			"Replies this host failed to send; the sender counts them as downstream loss.", "peer"),
		PacketsCorrupted: counter(reg, sub, "packets_corrupted_total",
			"Datagrams of this protocol whose checksum failed; not attributed to a sender."),
		Invalid: counterVec(reg, sub, "invalid_packets_total",
			"Datagrams that are not of this protocol, by reason.", "reason"),
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
	return r
}

// Peer returns one peer's instruments, creating its series at zero.
func (r *Receiver) Peer(peer string) ReceiverPeer {
	return ReceiverPeer{
		Received:       r.PacketsReceived.WithLabelValues(peer),
		Lost:           r.PacketsLost.WithLabelValues(peer),
		Duplicated:     r.PacketsDuplicated.WithLabelValues(peer),
		Reordered:      r.PacketsReordered.WithLabelValues(peer),
		Late:           r.PacketsLate.WithLabelValues(peer),
		DroppedLocally: r.DroppedLocally.WithLabelValues(peer),
		Restarts:       r.PeerRestarts.WithLabelValues(peer),
		Resyncs:        r.Resyncs.WithLabelValues(peer),
		Goodbyes:       r.Goodbyes.WithLabelValues(peer),
		LastPacket:     r.LastPacket.WithLabelValues(peer),
		GapLength:      r.GapLength.WithLabelValues(peer),
		ReorderExtent:  r.ReorderExtent.WithLabelValues(peer),
		OneWayDelay:    r.OneWayDelay.WithLabelValues(peer),
		ClockSkew:      r.ClockSkew.WithLabelValues(peer),
		Jitter:         r.Jitter.WithLabelValues(peer),
		IPDV:           r.IPDV.WithLabelValues(peer),
		RepliesSent:    r.RepliesSent.WithLabelValues(peer),
		RepliesLimited: r.RepliesLimited.WithLabelValues(peer),
		ReplyErrors:    r.ReplyErrors.WithLabelValues(peer),
	}
}

// DeletePeer removes every series of peer.
func (r *Receiver) DeletePeer(peer string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{
		r.PacketsReceived, r.PacketsLost, r.PacketsDuplicated, r.PacketsReordered, r.PacketsLate, r.DroppedLocally,
		r.PeerRestarts, r.Resyncs, r.Goodbyes, r.LastPacket, r.GapLength, r.ReorderExtent,
		r.OneWayDelay, r.ClockSkew, r.Jitter, r.IPDV, r.RepliesSent, r.RepliesLimited, r.ReplyErrors,
	} {
		v.DeleteLabelValues(peer)
	}
}
