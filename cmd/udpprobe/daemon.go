package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/udpprobe/udpprobe/internal/clock"
	"github.com/udpprobe/udpprobe/internal/config"
	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
)

const shutdownTimeout = 5 * time.Second

func init() { stampVersion() }

func versionString() string { return version.Print("udpprobe") }

// stampVersion fills what the linker flags left empty (`make build` and
// the image set them all) from what the Go toolchain recorded: the module
// version of `go install …@version`, and the commit and its time where the
// build stamped them (-buildvcs); the version is "dev" failing all that.
func stampVersion() {
	if info, ok := debug.ReadBuildInfo(); ok {
		if version.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			version.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && version.Revision == "":
				version.Revision = s.Value
			case s.Key == "vcs.time" && version.BuildDate == "":
				version.BuildDate = s.Value
			}
		}
	}
	if version.Version == "" {
		version.Version = "dev"
	}
}

func printHelp(w io.Writer) int {
	fmt.Fprint(w, usageText)
	if err := config.Usage(w); err != nil {
		return exitFailure
	}
	return exitOK
}

func configError(stderr io.Writer, mode string, err error) int {
	fmt.Fprintf(stderr, "udpprobe %s: bad configuration:\n  %s\n", mode,
		strings.ReplaceAll(err.Error(), "\n", "\n  "))
	return exitUsage
}

func newLogger(l config.Logging, w io.Writer) *zap.Logger {
	level, _ := zapcore.ParseLevel(l.LogLevel) // validated by config
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder = zapcore.NewJSONEncoder(enc)
	if l.LogFormat == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.AddSync(w), level)
	// Sample repeated messages: logs are a hint, the metrics are the record.
	return zap.New(zapcore.NewSamplerWithOptions(core, time.Second, 100, 100))
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("udpprobe"),
	)
	metrics.NewClock(reg, kernelClock)
	return reg
}

// setProcs sets GOMAXPROCS, unless the environment does, to the number of
// goroutines that do most of the daemon's work (at most the CPUs the runtime
// would use): idle processors only add wake-ups, which are most of what a
// datagram costs at low rates (docs/performance.md).
func setProcs(log *zap.Logger, busy int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	n := min(max(busy, 1), runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(n)
	log.Debug("GOMAXPROCS set to the goroutines that do the work; set GOMAXPROCS to override",
		zap.Int("gomaxprocs", n))
}

func runReceiver(ctx context.Context, stderr io.Writer) int {
	cfg, err := config.LoadReceiver()
	if err != nil {
		return configError(stderr, config.ModeReceiver, err)
	}
	// One goroutine does the work.
	return daemon(ctx, stderr, "receiver", cfg.Common, cfg.WebListenAddress, 1,
		func(log *zap.Logger, reg *prometheus.Registry) (func(context.Context) error, error) {
			rcv, err := receiver.New(receiverOptions(cfg, log, reg))
			if err != nil {
				return nil, err
			}
			return rcv.Run, nil
		})
}

// receiverOptions are a receiver's options from its configuration, with a
// logger and its metrics on reg.
func receiverOptions(cfg *config.Receiver, log *zap.Logger, reg *prometheus.Registry) receiver.Options {
	bound, _ := cfg.DelayMaxError() // validated
	return receiver.Options{
		ListenAddress: cfg.ListenAddress, LossTimeout: cfg.LossTimeout,
		SummaryInterval: cfg.SummaryInterval, MaxPeers: cfg.MaxPeers, PeerExpiry: cfg.PeerExpiry,
		ReceiveBuffer: cfg.ReceiveBuffer, Reflect: cfg.Reflect, ReflectRate: cfg.ReflectRate,
		ReflectBudget: cfg.ReflectBudget, ReflectBudgetBytes: cfg.ReflectBudgetBytes, Keys: cfg.Keys,
		STAMPListenAddress: cfg.StampListenAddress, STAMPKeys: cfg.StampKeys, ClockState: kernelClock,
		HopCount: cfg.HopCount, DepthMetrics: cfg.DepthMetrics, DelayMaxError: bound, Logger: log, Metrics: metrics.NewReceiver(reg, histograms(cfg.Common)),
	}
}

// kernelClock is the host clock's state as the kernel knows it.
func kernelClock() (bool, time.Duration, error) {
	s, err := clock.Kernel()
	return s.Synchronised, s.MaxError, err
}

// histograms is how the histograms are exposed.
func histograms(c config.Common) metrics.Histograms {
	if c.ClassicHistograms {
		return metrics.ClassicAndNative
	}
	return metrics.NativeOnly
}

func runSender(ctx context.Context, stderr io.Writer) int {
	cfg, err := config.LoadSender()
	if err != nil {
		return configError(stderr, config.ModeSender, err)
	}
	// One goroutine sends to every target; a reply reader, with round
	// trips, does less; discovery, less still.
	return daemon(ctx, stderr, "sender", cfg.Common, cfg.WebListenAddress, 1,
		func(log *zap.Logger, reg *prometheus.Registry) (func(context.Context) error, error) {
			m := metrics.NewSender(reg, cfg.Name, histograms(cfg.Common))
			d, err := discovery.New(discovery.Options{
				Entries: cfg.Targets, Interval: cfg.ResolveInterval, FileCheck: fileCheck, Family: cfg.Family(),
				Logger: log.Named("discovery"), Failed: func(source string) { m.DiscoveryFailures.WithLabelValues(source).Inc() },
			})
			if err != nil {
				return nil, err
			}
			snd, err := sender.New(sender.Options{
				Rate: cfg.Rate, PayloadSize: cfg.PayloadSize, Name: cfg.Name,
				RoundTrip: cfg.RoundTrip, LossTimeout: cfg.LossTimeout, Keys: cfg.Keys, Logger: log, Metrics: m,
				STAMPKeys: cfg.StampKeys, ClockState: kernelClock, TrafficClass: cfg.TrafficClass(), DontFragment: cfg.DontFragment,
				Flows: cfg.Flows,
			})
			if err != nil {
				return nil, err
			}
			// What does not resolve yet is warned about and tried again
			// every resolve interval: a name may come later (a Service
			// being created, a file being written).
			first := d.Targets(ctx, time.Now(), true)
			snd.SetTargets(first)
			return func(ctx context.Context) error {
				var g errgroup.Group
				dctx, stop := context.WithCancel(ctx)
				g.Go(func() error { d.Run(dctx, first, snd.SetTargets); return nil })
				g.Go(func() error { defer stop(); return snd.Run(ctx) })
				return g.Wait()
			}, nil
		})
}

// fileCheck is how often a file_sd file is looked at for a change.
const fileCheck = time.Second

// daemon is what both modes do around their component: it makes the
// logger, sets the processors for the busy goroutines, builds the
// component on a new registry and serves until ctx is done.
func daemon(ctx context.Context, stderr io.Writer, mode string, common config.Common, webAddr string, busy int,
	build func(*zap.Logger, *prometheus.Registry) (func(context.Context) error, error)) int {
	log := newLogger(common.Logging, stderr).Named(mode)
	defer log.Sync() //nolint:errcheck // nothing useful to do on exit
	setProcs(log, busy)
	reg := newRegistry()
	run, err := build(log, reg)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitFailure
	}
	return serve(ctx, log, reg, webAddr, common.WebConfigFile, mode, run)
}

// The HTTP server's bounds. A scrape's request is a few hundred bytes; a
// larger header is answered 431. Connections beyond maxConns wait in the
// kernel's backlog until one closes (ReadHeaderTimeout closes a slow one),
// so a crowd of half-open requests costs at most maxConns × maxHeaderBytes
// of buffers.
const (
	maxHeaderBytes = 8 << 10
	maxConns       = 256
)

// serve runs the component and the HTTP server until ctx is done or either
// fails, then shuts both down.
func serve(ctx context.Context, log *zap.Logger, reg *prometheus.Registry, webAddr, webConfig, mode string,
	component func(context.Context) error) int {
	ln, err := net.Listen("tcp", webAddr)
	if err != nil {
		log.Error("cannot listen on UDPPROBE_WEB_LISTEN_ADDRESS", zap.String("address", webAddr), zap.Error(err))
		return exitFailure
	}
	ln = netutil.LimitListener(ln, maxConns)
	var ready atomic.Bool
	srv := &http.Server{
		Handler:           newMux(reg, mode, &ready),
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	log.Info("serving metrics", zap.Stringer("address", ln.Addr()), zap.String("version", version.Version))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	if webConfig != "" {
		keeper, err := newLastGood(webConfig, log, metrics.NewWebConfigReloaded(reg))
		if err != nil {
			log.Warn("serving with UDPPROBE_WEB_CONFIG_FILE as it is: if it breaks while the daemon runs, "+
				"the endpoints answer 500 until it is fixed", zap.Error(err))
		} else {
			defer keeper.Close()
			webConfig = keeper.path()
			g.Go(func() error { return keeper.run(gctx) })
		}
	}
	g.Go(func() error {
		defer stop() // however the component ends, the server follows
		ready.Store(true)
		return component(gctx)
	})
	g.Go(func() error {
		// exporter-toolkit adds TLS, basic auth and its rate limit from the
		// web configuration, if there is one: the last good copy of the
		// operator's file. It reads the certificates again for every
		// connection, so they can be renewed in place.
		flags := &web.FlagConfig{WebConfigFile: &webConfig}
		if err := web.Serve(ln, srv, flags, slog.New(zapslog.NewHandler(log.Named("http").Core()))); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		ready.Store(false)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			// Connections that never sent a request count as busy for a
			// while; a stop was asked for, so close them rather than fail.
			log.Warn("closing the HTTP connections still open after the shutdown timeout",
				zap.Duration("shutdown_timeout", shutdownTimeout))
			return srv.Close()
		} else if err != nil {
			return err
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		log.Error("stopped on error", zap.Error(err))
		return exitFailure
	}
	log.Info("stopped")
	return exitOK
}
