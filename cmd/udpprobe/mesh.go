package main

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/udpprobe/udpprobe/internal/config"
	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/mesh"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// helloEvery is how often a mesh node asks a member it cannot name yet.
const helloEvery = time.Second

func runMesh(ctx context.Context, stderr io.Writer) int {
	cfg, err := config.LoadMesh()
	if err != nil {
		return configError(stderr, config.ModeMesh, err)
	}
	// Two goroutines do the work: the receiving loop, which reflects, and
	// the sending one.
	return daemon(ctx, stderr, "mesh", cfg.Common, cfg.WebListenAddress, 2,
		func(log *zap.Logger, reg *prometheus.Registry) (func(context.Context) error, error) {
			return buildMesh(cfg, log, reg)
		})
}

// buildMesh wires a mesh node: the receiver owns the socket, reflects and
// hands the replies it gets to the sender (round trips) or to the mesh
// (hellos); the sender probes the neighbours the mesh names; discovery
// tells the mesh the members.
func buildMesh(cfg *config.Mesh, log *zap.Logger, reg *prometheus.Registry) (func(context.Context) error, error) {
	epoch := time.Now()
	sm := metrics.NewSender(reg, cfg.Name, histograms(cfg.Common))
	var snd *sender.Sender
	var msh *mesh.Mesh
	ro := receiverOptions(cfg.Receiver(), log.Named("receiver"), reg)
	ro.Name, ro.Epoch = cfg.Name, epoch
	ro.OnReply = func(h *wire.Header, b []byte, from netip.AddrPort, at receiver.Instant) {
		if h.Hello() {
			msh.HelloReply(h, from)
			return
		}
		snd.HandleReply(b, from, at.Mono)
	}
	rcv, err := receiver.New(ro)
	if err != nil {
		return nil, err
	}
	conn := rcv.Conn()
	if snd, err = sender.New(sender.Options{
		Rate: cfg.Rate, PayloadSize: cfg.PayloadSize, Name: cfg.Name, RoundTrip: true, LossTimeout: cfg.LossTimeout,
		Keys: cfg.Keys, Logger: log.Named("sender"), Metrics: sm, Conn: conn, Epoch: epoch,
		ClockState: kernelClock, TrafficClass: cfg.TrafficClass(), DontFragment: cfg.DontFragment,
		Flows: cfg.Flows,
	}); err != nil {
		conn.Close()
		return nil, err
	}
	self := localAddrs(rcv.Addr().Port())
	if msh, err = mesh.New(mesh.Options{
		Name: cfg.Name, Self: self, Neighbours: cfg.Neighbours, HelloEvery: helloEvery, Recheck: cfg.ResolveInterval,
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		Targets: snd.SetTargets, Keys: cfg.Keys, Logger: log.Named("mesh"),
	}); err != nil {
		conn.Close()
		return nil, err
	}
	d, err := discovery.New(discovery.Options{
		Entries: cfg.Targets, Interval: cfg.ResolveInterval, FileCheck: fileCheck, Family: cfg.Family(),
		Logger: log.Named("discovery"),
		Failed: func(source string) { sm.DiscoveryFailures.WithLabelValues(source).Inc() },
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return func(ctx context.Context) error {
		first := d.Targets(ctx, time.Now(), true)
		msh.SetMembers(first)
		// The receiver outlives the sender, whose last replies it reads.
		rctx, stopReceiver := context.WithCancel(context.Background())
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			defer stopReceiver()
			return snd.Run(gctx)
		})
		g.Go(func() error { return rcv.Run(rctx) })
		g.Go(func() error { d.Run(gctx, first, msh.SetMembers); return nil })
		g.Go(func() error { return msh.Run(gctx) })
		return g.Wait()
	}, nil
}

// localAddrs reports whether an address is this host's, on port: one of
// its interfaces' addresses, read again at most every few seconds.
func localAddrs(port uint16) func(netip.AddrPort) bool {
	var mu sync.Mutex
	var at time.Time
	var own map[netip.Addr]bool
	return func(a netip.AddrPort) bool {
		if a.Port() != port {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > 5*time.Second {
			at, own = time.Now(), map[netip.Addr]bool{}
			addrs, _ := net.InterfaceAddrs()
			for _, ad := range addrs {
				if p, err := netip.ParsePrefix(ad.String()); err == nil {
					own[p.Addr().Unmap()] = true
				}
			}
		}
		return own[a.Addr().Unmap()]
	}
}
