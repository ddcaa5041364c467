package receiver

// jitterGain is the RFC 3550 estimator's gain: each sample moves the
// estimate a sixteenth of the way to the new |D|.
const jitterGain = 1.0 / 16

// timing is one stream's delay-variation state. Only first copies that
// arrive in order feed it: reordered, duplicated and late datagrams would
// turn reordering into false jitter.
type timing struct {
	have      bool
	seq       uint64  // of the previous in-order datagram
	sendClock int64   // its send time on the sender's monotonic clock, ns
	arrival   int64   // its arrival on this host's monotonic clock, ns
	jitter    float64 // RFC 3550 J, ns
}

// variation is what one in-order datagram tells about delay variation.
type variation struct {
	ok     bool    // there was a previous in-order datagram to compare with
	jitter float64 // the updated RFC 3550 jitter, ns
	ipdv   int64   // |IPDV| in ns, if consecutive
	consec bool    // the previous in-order datagram had the sequence number before this one
}

// inOrder updates the state with a datagram received in order. Both clocks
// are monotonic, so neither host's wall-clock steps nor a constant offset
// between the hosts enter: D = (Rj − Ri) − (Sj − Si).
func (t *timing) inOrder(seq uint64, sendClock, arrival int64) variation {
	var v variation
	if t.have {
		d := (arrival - t.arrival) - (sendClock - t.sendClock)
		if d < 0 {
			d = -d
		}
		// RFC 3550 section 6.4.1 and appendix A.8: J += (|D| − J)/16.
		t.jitter += (float64(d) - t.jitter) * jitterGain
		v = variation{ok: true, jitter: t.jitter, ipdv: d, consec: seq == t.seq+1}
	}
	*t = timing{have: true, seq: seq, sendClock: sendClock, arrival: arrival, jitter: t.jitter}
	return v
}
