// Package receiver runs the receiving side of udpprobe in two parts: a
// Table, which keeps a bounded set of senders with a sequence tracker per
// session, decides replies and turns what the trackers decide into metrics,
// warnings and a periodic summary; and a Receiver, the socket loop that
// reads datagrams in batches, paces its reads and feeds the table.
//
// Goroutines: Run owns the socket and the table; housekeeping (loss
// deadlines, peer expiry, the summary) runs in the same goroutine, woken
// by the socket's read deadline. With a STAMP socket, Run starts one more,
// which reads it and answers STAMP; the two take turns at the table under
// a mutex. The sockets are closed when Run's context is done, which ends
// the blocked reads. Metrics are the only state other goroutines read.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Options configure a Receiver and its Table.
type Options struct {
	ListenAddress string
	// HopCount counts each peer's hop count and path changes, from the
	// hop limit its datagrams say they were sent with (peer.hops).
	HopCount bool
	// DepthMetrics counts and exports each peer's PDV and n-reordering.
	DepthMetrics bool
	// DelayMaxError, if not 0, is the most both clocks' maximum errors may
	// add up to for a one-way delay to be recorded, and both must say
	// they are synchronised (delayGate); 0 records every delay that is not
	// negative.
	DelayMaxError   time.Duration
	LossTimeout     time.Duration
	SummaryInterval time.Duration // 0: no summary
	MaxPeers        int
	PeerExpiry      time.Duration
	ReceiveBuffer   int // bytes; 0 keeps the kernel default
	// Reflect sends every valid probe back to its source as a reply, at most
	// ReflectRate per second per peer, in bursts of up to a tenth of that.
	Reflect     bool
	ReflectRate float64
	// ReflectBudget and ReflectBudgetBytes bound the replies to all peers
	// together, per second, in bursts of up to a tenth of that: what the
	// reflector can be made to send, whatever names and sources probes
	// come with. Zero: no such bound.
	ReflectBudget, ReflectBudgetBytes float64
	// Keys, if any, authenticate datagrams (wire.Auth): the others are
	// counted as invalid and ignored, and replies are signed.
	Keys [][]byte
	// Name is what a reply to a hello carries; empty: hellos are counted
	// and not answered. Only a reflecting receiver answers them.
	Name string
	// OnReply, if set, takes the replies that arrive (a mesh node's socket
	// is its sender's too) instead of counting them invalid. b and h are
	// valid only during the call; at is the arrival.
	OnReply func(h *wire.Header, b []byte, from netip.AddrPort, at Instant)
	// STAMPListenAddress, if set, is where the STAMP Session-Reflector
	// listens, authenticated under STAMPKeys if there are any (see
	// Table.HandleSTAMP).
	STAMPListenAddress string
	STAMPKeys          [][]byte
	// ClockState, if set, tells what the host knows of its clock, read at
	// housekeeping, for one-way delays and the error estimate STAMP
	// replies carry; until it says, the clock is taken as unsynchronised.
	ClockState func() (synchronised bool, maxError time.Duration, err error)
	// Epoch is the origin of the monotonic times the table is given (a
	// mesh node shares its sender's); zero: when New runs.
	Epoch   time.Time
	Logger  *zap.Logger
	Metrics *metrics.Receiver
	Clock   clock.Clock // nil: clock.Real
}

// Receiver is a bound receiving socket feeding a Table.
type Receiver struct {
	opts  Options
	log   *zap.Logger
	clock clock.Clock
	conn  *net.UDPConn // for replies; closed by in.Unpoll when holding
	addr  netip.AddrPort
	in    *socket.Reader
	epoch time.Time // origin of the monotonic nanoseconds given to the table
	table *Table
	pace  socket.Pacer // zero: no holds
	drops uint32       // last SO_RXQ_OVFL value
	// The STAMP reflector's socket, if there is one; its loop and Run's
	// take mu to use the table.
	stampIn    *socket.Reader
	stampAddr  netip.AddrPort
	stampDrops uint32
	mu         sync.Mutex
}

// ReadBatch is how many datagrams one read takes off the socket at most
// (recvmmsg on Linux). Each has a slot of the largest datagram; the slots'
// pages are resident only as far as datagrams have reached into them.
const ReadBatch = 64

// New binds the socket; the receiver is ready to count once it returns.
func New(opts Options) (*Receiver, error) {
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return errors.Join(socket.EnableDrops(c), socket.EnableTimestamps(c), socket.EnableTrafficOf(c))
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", opts.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.ListenAddress, err)
	}
	conn := pc.(*net.UDPConn)
	r := &Receiver{
		opts:  opts,
		log:   opts.Logger,
		clock: opts.Clock,
		conn:  conn,
		addr:  conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		epoch: opts.Epoch,
	}
	if r.epoch.IsZero() {
		r.epoch = opts.Clock.Now()
	}
	r.table, err = NewTable(opts, func(b []byte, to netip.AddrPort) error {
		_, err := r.conn.WriteToUDPAddrPort(b, to)
		return err
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	// One byte more than the largest datagram, so that a longer one is cut
	// to a length the decoder rejects instead of to one it accepts.
	if r.in, err = socket.NewReader(conn, ReadBatch, wire.MaxSize+1); err != nil {
		conn.Close()
		return nil, err
	}
	err = r.setBuffer()
	if err == nil && r.pace.Holds() {
		// Between holds, datagrams arriving must not wake the runtime's
		// poller; replies, which need the connection, never hold.
		err = r.in.Unpoll()
	}
	if err == nil && opts.STAMPListenAddress != "" {
		err = r.listenSTAMP()
	}
	if err != nil {
		r.in.Close()
		return nil, err
	}
	return r, nil
}

// listenSTAMP binds the STAMP reflector's socket and hands the table its
// replies.
func (r *Receiver) listenSTAMP() error {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return errors.Join(socket.EnableDrops(c), socket.EnableTimestamps(c))
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", r.opts.STAMPListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s for STAMP: %w", r.opts.STAMPListenAddress, err)
	}
	conn := pc.(*net.UDPConn)
	r.stampAddr = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	raw, err := conn.SyscallConn()
	if err == nil {
		// A socket bound to an IPv6 address (or to all, dual stack) hears
		// IPv6 and takes IPv6's options as well as IPv4's.
		err = socket.EnableTraffic(raw, r.stampAddr.Addr().Is6() && !r.stampAddr.Addr().Is4In6())
	}
	if err == nil {
		_, err = socket.SetReceiveBuffer(raw, r.opts.ReceiveBuffer)
	}
	if err == nil {
		oob := make([]byte, socket.TrafficClassControlSize) // used under r.mu, as the table is
		err = r.table.EnableSTAMP(r.opts.STAMPKeys, func(b []byte, to netip.AddrPort, tc int) error {
			var err error
			if tc < 0 {
				_, err = conn.WriteToUDPAddrPort(b, to)
			} else {
				a := to.Addr()
				_, _, err = conn.WriteMsgUDPAddrPort(b, socket.TrafficClassControl(oob, a.Is4() || a.Is4In6(), uint8(tc)), to)
			}
			return err
		})
	}
	if err == nil {
		r.stampIn, err = socket.NewReader(conn, ReadBatch, wire.MaxSize+1)
	}
	if err != nil {
		conn.Close()
	}
	return err
}

// STAMPAddr is the STAMP reflector's bound address, if it has one.
func (r *Receiver) STAMPAddr() netip.AddrPort { return r.stampAddr }

func (r *Receiver) setBuffer() error {
	raw, err := r.conn.SyscallConn()
	if err != nil {
		return err
	}
	granted, err := socket.SetReceiveBuffer(raw, r.opts.ReceiveBuffer)
	if err != nil {
		return fmt.Errorf("set the receive buffer: %w", err)
	}
	r.opts.Metrics.ReceiveBuffer.Set(float64(granted))
	if socket.Timestamps && !r.opts.Reflect {
		r.pace = socket.NewPacer(granted)
	}
	if granted > 0 && granted < r.opts.ReceiveBuffer {
		r.log.Warn("the kernel granted a smaller receive buffer than requested; bursts may be dropped "+
			"in this host's socket (udpprobe_receiver_socket_drops_total), not in the network. "+
			"Raise net.core.rmem_max or run with CAP_NET_ADMIN",
			zap.Int("requested_bytes", r.opts.ReceiveBuffer), zap.Int("granted_bytes", granted))
	}
	return nil
}

// Addr is the bound address.
func (r *Receiver) Addr() netip.AddrPort { return r.addr }

// Conn is the receiving socket, for a sender that shares it (a mesh node).
// It is closed when Run returns.
func (r *Receiver) Conn() *net.UDPConn { return r.conn }

// instant is now on the table's two clocks.
func (r *Receiver) instant(now time.Time) Instant {
	return Instant{Wall: now.UnixNano(), Mono: int64(now.Sub(r.epoch))}
}

// Run receives until ctx is done. It closes the socket on return.
func (r *Receiver) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.in.Close() })
	defer stop()
	defer r.in.Close()
	timer := r.clock.NewTimer()
	now := r.clock.Now()
	nextHousekeeping := now
	r.log.Info("receiving", zap.Stringer("address", r.Addr()),
		zap.Duration("loss_timeout", r.opts.LossTimeout), zap.Int("max_peers", r.opts.MaxPeers),
		zap.Bool("kernel_timestamps", socket.Timestamps), zap.Bool("reflect", r.opts.Reflect))
	var stamping sync.WaitGroup
	if r.stampIn != nil {
		stop := context.AfterFunc(ctx, func() { r.stampIn.Close() })
		defer stop()
		stamping.Go(r.reflectSTAMP)
		r.log.Info("reflecting STAMP", zap.Stringer("address", r.stampAddr), zap.Bool("authenticated", len(r.opts.STAMPKeys) > 0))
	}
	defer stamping.Wait()
	defer func() {
		if r.stampIn != nil {
			r.stampIn.Close()
		}
	}()
	for {
		if !now.Before(nextHousekeeping) {
			r.mu.Lock()
			if r.opts.ClockState != nil {
				if synced, maxErr, err := r.opts.ClockState(); err == nil {
					r.table.SetClock(synced, maxErr)
				}
			}
			r.table.Housekeep(r.instant(now))
			r.mu.Unlock()
			nextHousekeeping = now.Add(houseInterval(r.opts.LossTimeout))
			if err := r.in.SetDeadline(nextHousekeeping); err != nil && ctx.Err() == nil {
				return err
			}
		}
		n, stamped, err := r.read()
		now = r.clock.Now()
		if err != nil {
			if ctx.Err() != nil {
				r.log.Info("receiver stopped")
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("read: %w", err)
		}
		if r.pace.Holds() && n < ReadBatch && stamped {
			timer.Sleep(ctx, r.pace.Next())
		}
	}
}

// read takes one batch off the socket and hands it to the table. It
// returns how many datagrams it took and whether the kernel stamped them
// all.
func (r *Receiver) read() (n int, stamped bool, err error) {
	msgs, err := r.in.Read()
	if err != nil {
		return 0, false, err
	}
	read := r.instant(r.clock.Now())
	stamped = true
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		stamped = stamped && m.Control.HasTime
		r.pace.Queue(len(m.Buf))
		// Each datagram carries the socket's drop count as of its own
		// arrival, so drops are placed between the right two of a batch.
		wall, mono := socket.Arrival(m.Control, read.Wall, read.Mono)
		if c := m.Control; c.HasDrops && c.Drops != r.drops {
			r.table.SocketDropped(uint64(c.Drops-r.drops), mono) // uint32 arithmetic survives the wrap
			r.drops = c.Drops
		}
		r.table.HandleTraffic(m.Buf, m.From, Instant{Wall: wall, Mono: mono},
			Traffic{TTL: m.Control.TTL, TOS: m.Control.TOS, HasTTL: m.Control.HasTTL, HasTOS: m.Control.HasTOS})
	}
	return len(msgs), stamped, nil
}

// houseInterval is how often loss deadlines are checked without traffic: a
// quarter of the loss timeout, within 10 to 250 ms.
func houseInterval(lossTimeout time.Duration) time.Duration {
	return min(max(lossTimeout/4, 10*time.Millisecond), 250*time.Millisecond)
}

// reflectSTAMP reads the STAMP socket until it is closed and answers
// every test packet, under the table's lock. Drops at this socket count
// as this host's socket drops; they are not attributed to a session's
// gaps.
func (r *Receiver) reflectSTAMP() {
	for {
		msgs, err := r.stampIn.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		read := r.instant(r.clock.Now())
		r.mu.Lock()
		for i := range msgs {
			m := &msgs[i]
			c := m.Control
			if c.HasDrops && c.Drops != r.stampDrops {
				r.opts.Metrics.SocketDrops.Add(float64(c.Drops - r.stampDrops))
				r.stampDrops = c.Drops
			}
			wall, mono := socket.Arrival(c, read.Wall, read.Mono)
			r.table.HandleSTAMP(m.Buf, m.From, Instant{Wall: wall, Mono: mono},
				Traffic{TTL: c.TTL, TOS: c.TOS, HasTTL: c.HasTTL, HasTOS: c.HasTOS}, r.clock.Now().UnixNano())
		}
		r.mu.Unlock()
	}
}
