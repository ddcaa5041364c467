package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sender holds the sender's instruments, labelled by target (peer).
type Sender struct {
	PacketsSent       *prometheus.CounterVec
	SendErrors        *prometheus.CounterVec
	MissedSlots       *prometheus.CounterVec
	ScheduleLateness  *prometheus.HistogramVec
	RTT               *prometheus.HistogramVec
	RepliesReceived   *prometheus.CounterVec
	RepliesLate       *prometheus.CounterVec
	RepliesDuplicated *prometheus.CounterVec
	RepliesInvalid    *prometheus.CounterVec
	RoundTripLost     *prometheus.CounterVec
	UpstreamLost      *prometheus.CounterVec
	DownstreamLost    *prometheus.CounterVec
}

// SenderPeer holds one target's instruments, looked up once.
type SenderPeer struct {
	PacketsSent, SendErrors, MissedSlots                            prometheus.Counter
	RepliesReceived, RepliesLate, RepliesDuplicated, RepliesInvalid prometheus.Counter
	RoundTripLost, UpstreamLost, DownstreamLost                     prometheus.Counter
	ScheduleLateness, RTT                                           prometheus.Observer
}

// NewSender registers the sender's metrics on reg.
func NewSender(reg prometheus.Registerer) *Sender {
	const sub = "sender"
	return &Sender{
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
		RepliesReceived: counterVec(reg, sub, "replies_received_total",
			"First replies received within the loss timeout (UDPPROBE_ROUND_TRIP).", "peer"),
		RepliesLate: counterVec(reg, sub, "replies_late_total",
			"Replies received after the loss timeout; their round trip stays counted as lost.", "peer"),
		RepliesDuplicated: counterVec(reg, sub, "replies_duplicated_total",
			"Extra replies for a datagram already answered.", "peer"),
		RepliesInvalid: counterVec(reg, sub, "replies_invalid_total",
			"Datagrams on the sending socket that are not a reply to this session: foreign, damaged, unauthenticated with UDPPROBE_HMAC_KEY, or for a datagram never sent.", "peer"),
		RoundTripLost: counterVec(reg, sub, "roundtrip_packets_lost_total",
			"Data datagrams whose reply did not arrive within the loss timeout (RFC 7680).", "peer"),
		UpstreamLost: counterVec(reg, sub, "upstream_packets_lost_total",
			"Round-trip losses the receiver's count shows it never received: lost on the way there.", "peer"),
		DownstreamLost: counterVec(reg, sub, "downstream_packets_lost_total",
			"Round-trip losses the receiver's count shows it received: the reply was lost on the way back.", "peer"),
	}
}

// Peer returns the instruments of one target, creating its series at zero.
func (s *Sender) Peer(peer string) SenderPeer {
	return SenderPeer{
		PacketsSent:       s.PacketsSent.WithLabelValues(peer),
		SendErrors:        s.SendErrors.WithLabelValues(peer),
		MissedSlots:       s.MissedSlots.WithLabelValues(peer),
		ScheduleLateness:  s.ScheduleLateness.WithLabelValues(peer),
		RTT:               s.RTT.WithLabelValues(peer),
		RepliesReceived:   s.RepliesReceived.WithLabelValues(peer),
		RepliesLate:       s.RepliesLate.WithLabelValues(peer),
		RepliesDuplicated: s.RepliesDuplicated.WithLabelValues(peer),
		RepliesInvalid:    s.RepliesInvalid.WithLabelValues(peer),
		RoundTripLost:     s.RoundTripLost.WithLabelValues(peer),
		UpstreamLost:      s.UpstreamLost.WithLabelValues(peer),
		DownstreamLost:    s.DownstreamLost.WithLabelValues(peer),
	}
}
