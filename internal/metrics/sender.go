package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sender holds the sender's instruments, labelled by target (peer).
type Sender struct {
	PacketsSent *prometheus.CounterVec
	SendErrors  *prometheus.CounterVec
	MissedSlots *prometheus.CounterVec
}

// SenderPeer holds one target's instruments, looked up once.
type SenderPeer struct {
	PacketsSent, SendErrors, MissedSlots prometheus.Counter
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
	}
}

// Peer returns the instruments of one target, creating its series at zero.
func (s *Sender) Peer(peer string) SenderPeer {
	return SenderPeer{
		PacketsSent: s.PacketsSent.WithLabelValues(peer),
		SendErrors:  s.SendErrors.WithLabelValues(peer),
		MissedSlots: s.MissedSlots.WithLabelValues(peer),
	}
}
