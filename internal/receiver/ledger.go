package receiver

// ledger matches the datagrams the kernel dropped at the socket to the gaps
// they left in the peers' streams, so that they are counted as dropped
// locally and not as lost.
type ledger struct {
	timeout      int64  // the loss timeout, ns
	unattributed uint64 // socket drops not yet matched to a peer's gap
	at           int64  // monotonic ns of the datagram that reported the latest drops
}

// dropped takes n drops reported by the datagram that arrived at now.
func (l *ledger) dropped(n uint64, now int64) {
	l.unattributed += n
	l.at = now
}

// attribute offers the drops to the gap a datagram of p just revealed. The
// drops happened before l.at; the gap can hold them if p's previous datagram
// arrived before that. With one sender this is exact, as long as the socket
// drops only first copies: every number the socket dropped is missing from
// the gap the next datagram reveals. With several, a peer whose gap spans the
// drops takes as many as it can, first come first served; the total stays
// the kernel's count. Drops no gap claims within the loss timeout are let go
// (they were duplicates, or another peer's that never showed).
func (l *ledger) attribute(p *peer, prevSeen int64, revealed uint64, now int64) {
	if l.unattributed == 0 {
		return
	}
	if now-l.at >= l.timeout {
		l.unattributed = 0
		return
	}
	if revealed == 0 || prevSeen >= l.at {
		return
	}
	n := min(l.unattributed, revealed)
	l.unattributed -= n
	p.credit += n
	p.creditUntil = now + l.timeout
}
