package receiver

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/stamp"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// The STAMP Session-Reflector (RFC 8762, RFC 8972), stateful. Each STAMP
// session, a Session-Sender's address and port with the SSID it gives, is a
// peer of the table like a udpprobe sender: sender is the address and port,
// target "stamp:" and the SSID. Its test packets go through the same
// probation, tracker, reply limits and budgets, and count in the same
// series; STAMP has no goodbye, so a session ends by going silent, and its
// series leave with the peer expiry. A reply carries the reflector's own
// sequence number, how many replies the session has been sent before it,
// so the sender can tell the two directions' losses apart.

// Traffic is what a probe's IP header said: its TTL or hop limit and its
// TOS or traffic class, where the socket read them.
type Traffic struct {
	TTL, TOS       uint8
	HasTTL, HasTOS bool
}

// STAMPReplyFunc sends a STAMP reply to a session-sender with the traffic
// class tc (DSCP in the high six bits, ECN in the low two), or, when tc
// is negative, with the socket's own.
type STAMPReplyFunc func(b []byte, to netip.AddrPort, tc int) error

// STAMPTarget prefixes the SSID in a STAMP session's target label.
const STAMPTarget = "stamp:"

// stampReflector is the table's STAMP state: the packet being answered
// and the buffers, reused for every packet.
type stampReflector struct {
	auth     *stamp.Auth         // nil: unauthenticated mode
	send     ReplyFunc           // the table's way to send: with the traffic class tc
	estimate stamp.ErrorEstimate // this host's clock, for the timestamps it writes
	hdr      wire.Header         // the test packet as the table's peers see it
	test     stamp.Test
	rep      stamp.Reflected
	out      []byte
	name     []byte
	target   []byte
	// The packet being answered, while HandleSTAMP runs.
	answering bool
	probe     []byte
	arrived   int64 // wall ns: the receive timestamp
	now       int64 // wall ns: the timestamp of the reply
	traffic   Traffic
	// tc is the traffic class of its reply: DSCP1 of its Class of Service
	// TLV (RFC 8972 section 4.4: every class is permitted here), or -1,
	// the socket's own, without one.
	tc int
}

// EnableSTAMP makes the table a STAMP Session-Reflector, sending replies
// with send, authenticated under keys if there are any.
func (t *Table) EnableSTAMP(keys [][]byte, send STAMPReplyFunc) error {
	r := &stampReflector{test: stamp.Test{TLVs: make([]stamp.TLV, 0, stamp.MaxTLVs)},
		estimate: stamp.Estimate(false, clock.MaxErrorCeiling), tc: -1}
	r.send = func(b []byte, to netip.AddrPort) error { return send(b, to, r.tc) }
	if len(keys) > 0 {
		var err error
		if r.auth, err = stamp.NewAuth(keys); err != nil {
			return err
		}
	}
	t.stamp = r
	return nil
}

// SetClock is what this host knows of its clock, for its one-way delays
// (delayGate) and the error estimate of
// the timestamps a STAMP reply carries.
func (t *Table) SetClock(synchronised bool, maxError time.Duration) {
	t.delays.synchronised, t.delays.maxError = synchronised, maxError
	if t.stamp != nil {
		t.stamp.estimate = stamp.Estimate(synchronised, maxError)
	}
}

// HandleSTAMP takes one STAMP test packet from source that arrived at the
// given instant with the IP header's traffic, and answers it; now is the
// wall time (ns) its reply is stamped with.
func (t *Table) HandleSTAMP(b []byte, from netip.AddrPort, at Instant, traffic Traffic, now int64) {
	r := t.stamp
	switch err := stamp.DecodeTest(b, &r.test, r.auth); err {
	case nil:
	case stamp.ErrAuth:
		t.invalid[wire.ErrAuth].Inc()
		t.watch.unauthenticated(from)
		return
	default:
		t.invalid[wire.ErrTooShort].Inc()
		return
	}
	h := &r.hdr
	r.name = from.AppendTo(r.name[:0])
	r.target = strconv.AppendUint(append(r.target[:0], STAMPTarget...), uint64(r.test.SSID), 10)
	sent := r.test.Timestamp.Time().UnixNano()
	*h = wire.Header{Session: 1, Seq: uint64(r.test.Seq), SendTime: sent, SendClock: sent, Clock: uint16(r.test.ErrorEstimate),
		Name: r.name, Target: r.target}
	r.answering, r.probe, r.arrived, r.now, r.traffic, r.tc = true, b, at.Wall, now, traffic, -1
	t.arrived = Traffic{} // a STAMP test packet's traffic class is its reply's business
	t.data(h, b, 0, from, at)
	r.answering, r.probe = false, nil
}

// reply makes the reply to the packet being answered, the session's reply
// number s.replied: the reflector's timestamps, what it received, and the
// TLVs back: Class of Service filled in with what the probe arrived with,
// types it does not know flagged U, and a malformed tail as it came, so
// that the reply is as long as the probe (RFC 8762 section 4.1.2).
func (r *stampReflector) reply(s *stream) []byte {
	t := &r.test
	for i := range t.TLVs {
		v := &t.TLVs[i]
		switch v.Type {
		case stamp.TypeExtraPadding:
		case stamp.TypeClassOfService:
			if c, ok := stamp.ParseClassOfService(v.Value); ok && r.traffic.HasTOS {
				c.DSCP2, c.ECN = r.traffic.TOS>>2, r.traffic.TOS&0x3
				w := c.Value()
				copy(v.Value, w[:]) // in the probe's buffer, which is not read again
				r.tc = int(c.DSCP1) << 2
			} else {
				v.Flags |= stamp.FlagMalformed
			}
		default:
			v.Flags |= stamp.FlagUnrecognized
		}
	}
	ttl := uint8(255) // not known: the most a TTL says
	if r.traffic.HasTTL {
		ttl = r.traffic.TTL
	}
	r.rep = stamp.Reflected{
		Seq: uint32(s.replied), Timestamp: stamp.NTP(time.Unix(0, r.now)), ErrorEstimate: r.estimate, SSID: t.SSID,
		ReceiveTimestamp: stamp.NTP(time.Unix(0, r.arrived)), SenderSeq: t.Seq, SenderTimestamp: t.Timestamp,
		SenderErrorEstimate: t.ErrorEstimate, SenderTTL: ttl, TLVs: t.TLVs,
	}
	out := r.rep.Append(r.out[:0], r.auth)
	if t.Malformed {
		out = append(out, r.probe[min(len(out), len(r.probe)):]...)
	}
	r.out = out
	return out
}
