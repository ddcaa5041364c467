package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/config"
	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/tracker"
	"github.com/udpprobe/udpprobe/internal/wire"
)

const runUsage = `Usage: udpprobe run [flags] TARGET

Probe one target, a udpprobe receiver with UDPPROBE_REFLECT=true (host:port)
or a STAMP Session-Reflector (stamp://host:port), for a while, and print what
the round trips showed. Exit codes: 0 within the thresholds, 1 a threshold
crossed or the run failed, 2 bad usage. Ctrl-C ends the run early and prints
the summary so far.

Flags:
`

// oneShot is what udpprobe run was asked to do.
type oneShot struct {
	target      string
	duration    time.Duration
	rate        float64
	payloadSize int
	name        string
	keyFile     string
	lossTimeout time.Duration
	output      string
	maxLoss     float64 // a ratio; negative: no threshold
	maxRTTP99   time.Duration
}

// parseOneShot reads udpprobe run's flags.
func parseOneShot(args []string, stderr io.Writer) (*oneShot, error) {
	o := &oneShot{maxLoss: -1}
	fs := flag.NewFlagSet("udpprobe run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, runUsage)
		fs.PrintDefaults()
	}
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to probe")
	fs.Float64Var(&o.rate, "rate", 100, "datagrams per second, as UDPPROBE_RATE")
	fs.IntVar(&o.payloadSize, "payload-size", 0, "UDP payload bytes per datagram, as UDPPROBE_PAYLOAD_SIZE; 0: the smallest")
	fs.StringVar(&o.name, "name", "", "this sender's name, as UDPPROBE_NAME; default: the host name")
	fs.StringVar(&o.keyFile, "hmac-key-file", "", "a file holding the key, as UDPPROBE_HMAC_KEY_FILE (for stamp://, STAMP's authenticated mode)")
	fs.DurationVar(&o.lossTimeout, "loss-timeout", 3*time.Second, "waiting time for a reply, as UDPPROBE_LOSS_TIMEOUT; the run waits this long for the last replies")
	fs.StringVar(&o.output, "output", "text", "the summary as text or json")
	maxLoss := fs.String("max-loss", "", "fail (exit 1) when more than this share of the round trips is lost: 1% or 0.01")
	fs.DurationVar(&o.maxRTTP99, "max-rtt-p99", 0, "fail (exit 1) when the 99th percentile round-trip time is above this; 0: no threshold")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return nil, errors.New("one TARGET, please")
	}
	o.target = fs.Arg(0)
	var errs []error
	if *maxLoss != "" {
		v, err := parseRatio(*maxLoss)
		if err != nil {
			errs = append(errs, fmt.Errorf("--max-loss %q: %w", *maxLoss, err))
		}
		o.maxLoss = v
	}
	if o.duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %v: must be more than 0", o.duration))
	}
	if !(o.rate >= 0.1 && o.rate <= 1e6) {
		errs = append(errs, fmt.Errorf("--rate %v: must be 0.1 to 1000000", o.rate))
	}
	if o.output != "text" && o.output != "json" {
		errs = append(errs, fmt.Errorf("--output %q: text or json", o.output))
	}
	if o.lossTimeout < 10*time.Millisecond || o.lossTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--loss-timeout %v: must be 10ms to 10m", o.lossTimeout))
	}
	if o.maxRTTP99 < 0 {
		errs = append(errs, fmt.Errorf("--max-rtt-p99 %v: must be 0 or more", o.maxRTTP99))
	}
	if o.name == "" {
		host, err := os.Hostname()
		if err != nil {
			errs = append(errs, fmt.Errorf("--name is not given and the host name is unknown: %w", err))
		}
		o.name = host
	}
	if !wire.ValidName([]byte(o.name)) {
		errs = append(errs, fmt.Errorf("--name %q: 1-64 of [A-Za-z0-9._:-]", o.name))
	}
	return o, errors.Join(errs...)
}

// parseRatio reads "1%" as 0.01 and "0.01" as itself, 0 to 1.
func parseRatio(s string) (float64, error) {
	scale := 1.0
	if p, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = p, 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0 && v/scale <= 1) {
		return 0, errors.New("a share from 0 to 1, or a percentage from 0% to 100%")
	}
	return v / scale, nil
}

// runOneShot is udpprobe run.
func runOneShot(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOneShot(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe run: %v\n", err)
		return exitUsage
	}
	sum, err := o.probe(ctx, progressTo(stderr))
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe run: %v\n", err)
		return exitFailure
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(sum)
	} else {
		err = sum.writeText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe run: %v\n", err)
		return exitFailure
	}
	if crossed := o.crossed(sum); len(crossed) > 0 {
		for _, c := range crossed {
			fmt.Fprintf(stderr, "udpprobe run: threshold crossed: %s\n", c)
		}
		return exitFailure
	}
	return exitOK
}

// crossed lists the thresholds the summary crosses.
func (o *oneShot) crossed(s *summary) []string {
	var out []string
	if o.maxLoss >= 0 && s.LossRatio > o.maxLoss {
		out = append(out, fmt.Sprintf("round-trip loss %s > %s", percent(s.LossRatio), percent(o.maxLoss)))
	}
	if o.maxRTTP99 > 0 && s.RTT.P99 > o.maxRTTP99.Seconds() {
		out = append(out, fmt.Sprintf("round-trip time p99 %v > %v", seconds(s.RTT.P99), o.maxRTTP99))
	}
	return out
}

// progressTo returns where live progress goes: stderr when it is a
// terminal, else nowhere.
func progressTo(stderr io.Writer) io.Writer {
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return f
		}
	}
	return nil
}

// summary is what udpprobe run prints: the round trips of one target.
type summary struct {
	Target   string  `json:"target"`
	Duration float64 `json:"duration_seconds"`
	Sent     uint64  `json:"sent"`
	// Received are the replies within the loss timeout; Lost the round
	// trips without one, Upstream and Downstream of them on which way.
	Received   uint64  `json:"received"`
	Lost       uint64  `json:"lost"`
	Upstream   uint64  `json:"lost_upstream"`
	Downstream uint64  `json:"lost_downstream"`
	Withheld   uint64  `json:"withheld"`
	Duplicated uint64  `json:"duplicated"`
	Reordered  uint64  `json:"reordered"`
	Late       uint64  `json:"late"`
	LossRatio  float64 `json:"loss_ratio"`
	RTT        struct {
		Min    float64 `json:"min"`
		Median float64 `json:"median"`
		P99    float64 `json:"p99"`
		Max    float64 `json:"max"`
	} `json:"rtt_seconds"`
	Jitter float64 `json:"jitter_seconds"`
	// LossPeriods are the maximal runs of sequence numbers without a reply
	// in time (RFC 3357), the longest of them LongestLossPeriod long.
	LossPeriods       uint64 `json:"loss_periods"`
	LongestLossPeriod uint64 `json:"longest_loss_period"`
}

// replies keeps what the sender tells of each reply.
type replies struct {
	mu        sync.Mutex
	rtts      map[uint64]time.Duration // answered sequence numbers
	highest   uint64                   // the highest answered, +1
	reordered uint64                   // answered after a higher one
}

func (r *replies) take(_ string, seq uint64, outcome tracker.ReplyOutcome, rtt time.Duration) {
	if outcome != tracker.ReplyAnswered {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rtts[seq] = rtt
	if seq+1 < r.highest {
		r.reordered++
	}
	r.highest = max(r.highest, seq+1)
}

func (r *replies) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rtts)
}

// probe runs a sender against the target for the duration, or until ctx
// ends, and sums up its round trips; progress, if not nil, gets a line a
// second.
func (o *oneShot) probe(ctx context.Context, progress io.Writer) (*summary, error) {
	var keys, stampKeys [][]byte
	if o.keyFile != "" {
		k, err := config.KeysFromFile("--hmac-key-file", o.keyFile)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(o.target, discovery.STAMPPrefix) {
			stampKeys = k
		} else {
			keys = k
		}
	}
	reg := prometheus.NewPedanticRegistry()
	rs := &replies{rtts: map[uint64]time.Duration{}}
	snd, err := sender.New(sender.Options{
		Targets: []string{o.target}, Rate: o.rate, PayloadSize: o.payloadSize, Name: o.name,
		RoundTrip: true, LossTimeout: o.lossTimeout, Keys: keys, STAMPKeys: stampKeys,
		Logger: zap.NewNop(), Metrics: metrics.NewSender(reg, o.name, metrics.NativeOnly),
		ClockState: kernelClock, OnReply: rs.take,
	})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithTimeout(ctx, o.duration)
	defer stop()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- snd.Run(runCtx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if progress != nil {
				fmt.Fprint(progress, "\r\033[K")
			}
			if err != nil {
				return nil, err
			}
			return o.sum(reg, snd.Sent(), rs, time.Since(start))
		case <-tick.C:
			if progress != nil {
				fmt.Fprintf(progress, "\r\033[K%s: %.0f s, %d replies", o.target, time.Since(start).Seconds(), rs.count())
			}
		}
	}
}

// sum reads the target's round-trip counts from the sender's metrics and
// the replies' times from rs.
func (o *oneShot) sum(reg *prometheus.Registry, sent uint64, rs *replies, took time.Duration) (*summary, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	value := func(name string) uint64 {
		for _, mf := range mfs {
			if mf.GetName() != "udpprobe_sender_"+name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "target" && l.GetValue() == o.target {
						return uint64(m.GetCounter().GetValue())
					}
				}
			}
		}
		return 0
	}
	s := &summary{Target: o.target, Duration: took.Seconds(), Sent: sent,
		Received: value("replies_received_total"), Lost: value("roundtrip_packets_lost_total"),
		Upstream: value("upstream_packets_lost_total"), Downstream: value("downstream_packets_lost_total"),
		Withheld: value("replies_withheld_total"), Duplicated: value("replies_duplicated_total"),
		Late: value("replies_late_total")}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	s.Reordered = rs.reordered
	if sent > 0 {
		s.LossRatio = float64(s.Lost) / float64(sent)
	}
	s.RTT.Min, s.RTT.Median, s.RTT.P99, s.RTT.Max, s.Jitter = rttStats(rs.rtts, sent)
	s.LossPeriods, s.LongestLossPeriod = lossPeriods(rs.rtts, sent)
	return s, nil
}

// rttStats are the smallest, median (nearest rank), 99th percentile
// (nearest rank) and largest round-trip time of the answered sequence
// numbers below sent, in seconds, and the RFC 3550 jitter of the
// round-trip times taken in sequence order (J += (|D| − J) / 16 between
// consecutive answered numbers).
func rttStats(rtts map[uint64]time.Duration, sent uint64) (lo, median, p99, hi, jitter float64) {
	if len(rtts) == 0 {
		return 0, 0, 0, 0, 0
	}
	seqs := make([]uint64, 0, len(rtts))
	sorted := make([]time.Duration, 0, len(rtts))
	for seq, d := range rtts {
		if seq < sent {
			seqs = append(seqs, seq)
			sorted = append(sorted, d)
		}
	}
	if len(sorted) == 0 {
		return 0, 0, 0, 0, 0
	}
	slices.Sort(seqs)
	slices.Sort(sorted)
	rank := func(q float64) float64 { // nearest rank: the smallest with at least q of them at or below
		return sorted[max(0, int(math.Ceil(q*float64(len(sorted))))-1)].Seconds()
	}
	var j float64
	for i := 1; i < len(seqs); i++ {
		d := math.Abs((rtts[seqs[i]] - rtts[seqs[i-1]]).Seconds())
		j += (d - j) / 16
	}
	return sorted[0].Seconds(), rank(0.5), rank(0.99), sorted[len(sorted)-1].Seconds(), j
}

// lossPeriods counts the maximal runs of sequence numbers below sent
// without an answered reply, and the longest.
func lossPeriods(rtts map[uint64]time.Duration, sent uint64) (periods, longest uint64) {
	var run uint64
	for seq := range sent {
		if _, ok := rtts[seq]; ok {
			run = 0
			continue
		}
		if run == 0 {
			periods++
		}
		run++
		longest = max(longest, run)
	}
	return periods, longest
}

// writeText prints the summary as a table.
func (s *summary) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("target", s.Target)
	row("duration", seconds(s.Duration).String())
	row("sent", strconv.FormatUint(s.Sent, 10))
	row("received", strconv.FormatUint(s.Received, 10))
	row("lost", fmt.Sprintf("%d (%s): %d upstream, %d downstream", s.Lost, percent(s.LossRatio), s.Upstream, s.Downstream))
	row("withheld", strconv.FormatUint(s.Withheld, 10))
	row("duplicated", strconv.FormatUint(s.Duplicated, 10))
	row("reordered", strconv.FormatUint(s.Reordered, 10))
	row("late", strconv.FormatUint(s.Late, 10))
	row("rtt min/median/p99/max", fmt.Sprintf("%v / %v / %v / %v",
		seconds(s.RTT.Min), seconds(s.RTT.Median), seconds(s.RTT.P99), seconds(s.RTT.Max)))
	row("jitter", seconds(s.Jitter).String())
	row("loss periods", fmt.Sprintf("%d, the longest %d", s.LossPeriods, s.LongestLossPeriod))
	return tw.Flush()
}

// seconds is s as a duration rounded to a microsecond, for people.
func seconds(s float64) time.Duration {
	return time.Duration(s * 1e9).Round(time.Microsecond)
}

// percent is a ratio as a percentage with up to three decimals.
func percent(r float64) string {
	return strconv.FormatFloat(math.Round(r*1e5)/1e3, 'f', -1, 64) + "%"
}
