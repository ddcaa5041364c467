package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
)

// fanOutResult is one run of a sender probing n targets at rate each,
// with round trips, against one reflecting receiver that hears every
// target as a peer of its own.
type fanOutResult struct {
	targets                 int
	rate                    float64 // per target
	sent                    uint64  // over every target, from the sender's last line
	sender, receiver        usage
	sendingCPU              time.Duration // the sender's, at the end of the run, before any scrape
	sentThen                uint64        // what it had sent then, from the scrape right after
	lateP99                 float64       // s, upper bound of the bucket
	seriesPerTarget         float64       // as a native-histogram scrape sees them
	scrapeText, scrapeProto time.Duration
	received, lost, local   uint64 // the receiver's, over every peer
	duplicated, reordered   uint64
	socketDrops, kernel     uint64
	missed                  uint64
	// The sender's, at the scrape after the run: replies the receiver held
	// back under its reflect rate limit, and round trips lost.
	withheld, roundTripsLost uint64
	steal                    float64 // the machine's CPU time the hypervisor took meanwhile
}

// perDatagram is the sender's CPU a datagram while it sent, without the
// scrapes that measure it and without its start and stop.
func (r fanOutResult) perDatagram() float64 {
	return r.sendingCPU.Seconds() * 1e6 / float64(max(r.sentThen, 1))
}

// exact: the receiver got every datagram sent, and counted nothing lost,
// duplicated or reordered on loopback, and every round trip was answered,
// none held back by the receiver's reflect rate limit (a run whose replies
// are held back does less work a datagram than it measures). (The
// kernel's drop count is the machine's: the sender's socket, dropping
// replies, is in it too.)
func (r fanOutResult) exact() bool {
	return r.received+r.local == r.sent && r.lost == 0 && r.duplicated == 0 && r.reordered == 0 &&
		r.withheld == 0 && r.roundTripsLost == 0
}

func (r fanOutResult) row() string {
	return fmt.Sprintf("| %d × %.0f/s | %d | %.2f | %.2f | %.3f | %d | %.1f / %.1f | %.1f | %.0f / %.0f | %d / %d | %.1f | %s |",
		r.targets, r.rate, r.sent, r.sender.cpu.Seconds(), r.perDatagram(), r.lateP99*1e3, r.missed,
		mib(r.sender.rss), mib(r.receiver.rss), r.seriesPerTarget,
		ms(r.scrapeText), ms(r.scrapeProto), r.socketDrops, r.kernel, 100*r.steal,
		yes(r.exact(), fmt.Sprintf("received %d + local %d of %d, lost %d; replies withheld %d, round trips lost %d",
			r.received, r.local, r.sent, r.lost, r.withheld, r.roundTripsLost)))
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// fanOut writes the many-targets table: one target at the aggregate rate
// and the same rate spread over o.fanOut targets, o.fanOutRuns times in
// turn, then those targets at ten times the rate, which the receiver must
// hear without a drop; and the CPU ratio of each pair, and their median
// over the pairs the hypervisor let be.
func fanOut(w io.Writer, o options) error {
	fmt.Fprintf(w, "\n## One sending loop for many targets, with round trips, %v each, native histograms only\n\n", o.duration)
	fmt.Fprintln(w, "| targets × rate | sent | sender CPU s | CPU µs per datagram while sending | lateness p99 ms (≤ bucket) | missed slots | peak RSS MiB (sender / receiver) | series per target | scrape ms (text / protobuf) | socket drops (receiver / kernel) | steal % | receiver counts |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	aggregate := float64(o.fanOut) * o.fanOutRate
	row := func(n int, rate float64) (fanOutResult, error) {
		r, err := fanOutRun(o, n, rate)
		if err != nil {
			return r, fmt.Errorf("%d targets at %v/s: %w", n, rate, err)
		}
		fmt.Fprintln(w, r.row())
		return r, nil
	}
	var pairs [][2]fanOutResult
	for range max(o.fanOutRuns, 1) {
		one, err := row(1, aggregate)
		if err != nil {
			return err
		}
		many, err := row(o.fanOut, o.fanOutRate)
		if err != nil {
			return err
		}
		pairs = append(pairs, [2]fanOutResult{one, many})
	}
	if _, err := row(o.fanOut, 10*o.fanOutRate); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, fanOutRatios(pairs, o.fanOut, aggregate))
	return nil
}

// maxSteal is the most of the machine's CPU time the hypervisor may take
// during a run for the run to count: beyond it the machine is not the one
// the figures describe.
const maxSteal = 0.05

// fanOutRatios says the CPU ratio of each pair of runs, n targets against
// one, and the median of those whose runs both kept within maxSteal.
func fanOutRatios(pairs [][2]fanOutResult, n int, aggregate float64) string {
	var b strings.Builder
	var fair []float64
	fmt.Fprintf(&b, "CPU per datagram with %d targets against one target at the same %.0f/s:", n, aggregate)
	for i, p := range pairs {
		ratio := p[1].perDatagram() / p[0].perDatagram()
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(&b, "%s %.2f×", sep, ratio)
		if stolen := max(p[0].steal, p[1].steal); stolen > maxSteal {
			fmt.Fprintf(&b, " (steal %.0f %%, not counted)", 100*stolen)
			continue
		}
		fair = append(fair, ratio)
	}
	if len(fair) == 0 {
		fmt.Fprintf(&b, ".\nNo pair ran with the hypervisor taking at most %.0f %% of the machine: no reading.\n", 100*maxSteal)
		return b.String()
	}
	slices.Sort(fair)
	median := fair[len(fair)/2]
	if len(fair)%2 == 0 {
		median = (fair[len(fair)/2-1] + median) / 2
	}
	fmt.Fprintf(&b, "; median of the %d pairs within %.0f %% steal: %.2f×.\n", len(fair), 100*maxSteal, median)
	return b.String()
}

// fanOutRun runs the receiver and the sender for o.duration.
func fanOutRun(o options, n int, rate float64) (fanOutResult, error) {
	r := fanOutResult{targets: n, rate: rate}
	loop := free("udp")
	_, port, _ := strings.Cut(loop, ":")
	// The receiver listens on every address, so that each of 127.0.x.y is
	// a target of its own: a peer of its own for the receiver. Its reflect
	// limits, per peer and in all, leave room for twice the rates: a reply
	// held back would be work the sender does not do.
	udp, web := ":"+port, free("tcp")
	total := strconv.FormatFloat(float64(n)*rate*2, 'f', 0, 64)
	recv, err := startReady(o.udpprobe, "receiving", receiverEnv(udp, web, "UDPPROBE_REFLECT=true",
		"UDPPROBE_REFLECT_RATE="+strconv.FormatFloat(2*rate, 'f', 0, 64),
		"UDPPROBE_MAX_PEERS=2000", "UDPPROBE_REFLECT_BUDGET="+total, "UDPPROBE_REFLECT_BUDGET_BYTES=268435456",
		"UDPPROBE_RECEIVE_BUFFER=16777216", "UDPPROBE_CLASSIC_HISTOGRAMS=false"), "receiver")
	if err != nil {
		return r, err
	}
	defer recv.Kill()
	targets, err := targetsFile(n, port)
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(filepath.Dir(targets))
	r.steal, err = stolen(func() error {
		r.kernel, err = kernelDrops(func() error { return r.session(o, targets, web) })
		return err
	})
	if err != nil {
		return r, err
	}
	if r.receiver, err = stop(recv, 30*time.Second); err != nil {
		return r, err
	}
	return r, nil
}

// session runs the sender, scrapes it while it runs, stops it and reads
// what the receiver counted.
func (r *fanOutResult) session(o options, targets, rweb string) error {
	sweb := free("tcp")
	send, err := startReady(o.udpprobe, `"sending"`, []string{"UDPPROBE_TARGETS=file:" + targets,
		"UDPPROBE_WEB_LISTEN_ADDRESS=" + sweb, "UDPPROBE_RATE=" + strconv.FormatFloat(r.rate, 'f', -1, 64),
		"UDPPROBE_NAME=" + peer, "UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=500ms",
		"UDPPROBE_CLASSIC_HISTOGRAMS=false", "UDPPROBE_LOG_FORMAT=json"}, "sender")
	if err != nil {
		return err
	}
	defer send.Kill()
	time.Sleep(o.duration)
	// The run's one scrape reads the lateness, as a Prometheus scraping
	// every 10 s would; the timed ones come after it, so that their cost
	// does not count as the sender's lateness.
	if r.sendingCPU, err = cpuTime(send.Pid()); err != nil {
		return err
	}
	url := "http://" + sweb + "/metrics"
	mfs, err := scrape.GetFamilies(url)
	if err != nil {
		return fmt.Errorf("sender metrics: %w", err)
	}
	r.readSender(mfs)
	if r.scrapeText, err = fetch(url, ""); err != nil {
		return err
	}
	if r.scrapeProto, err = fetch(url, string(expfmt.FmtProtoDelim)); err != nil {
		return err
	}
	if r.sender, err = stop(send, 30*time.Second); err != nil {
		return err
	}
	if r.sent, err = sentToAll(send, r.targets); err != nil {
		return err
	}
	return settle(func() error { return r.readReceiver(rweb) },
		func() bool { return r.received+r.lost+r.local >= r.sent })
}

// cpuTime is the user and system time a running process has used so far
// (/proc/PID/stat, in clock ticks of 10 ms).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStat(string(b))
}

// parseStat reads utime and stime from a /proc/PID/stat line.
func parseStat(stat string) (time.Duration, error) {
	// The fields after the command, which is in parentheses and may hold
	// spaces and parentheses: state is the first, utime the 12th and stime
	// the 13th.
	i := strings.LastIndex(stat, ") ")
	f := strings.Fields(stat[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("not a stat line: %q", stat)
	}
	var ticks uint64
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// fetch times a scrape of url in the format accept (the text format if
// empty), to the last byte, without parsing it.
func fetch(url, accept string) (time.Duration, error) {
	began := time.Now()
	err := scrape.Fetch(url, accept, func(r io.Reader, _ http.Header) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
	return time.Since(began), err
}

// readSender takes what it had sent, the lateness, the missed slots and
// the series per target from a protobuf scrape of the sender.
func (r *fanOutResult) readSender(mfs []*dto.MetricFamily) {
	perTarget := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "target" {
					perTarget++
				}
			}
		}
		switch mf.GetName() {
		case "udpprobe_sender_packets_sent_total":
			for _, m := range mf.GetMetric() {
				r.sentThen += uint64(m.GetCounter().GetValue())
			}
		case "udpprobe_sender_schedule_lateness_seconds":
			r.lateP99 = nativeQuantile(mf.GetMetric()[0].GetHistogram(), .99)
		case "udpprobe_sender_missed_slots_total":
			r.missed = uint64(mf.GetMetric()[0].GetCounter().GetValue())
		case "udpprobe_sender_replies_withheld_total":
			for _, m := range mf.GetMetric() {
				r.withheld += uint64(m.GetCounter().GetValue())
			}
		case "udpprobe_sender_roundtrip_packets_lost_total":
			for _, m := range mf.GetMetric() {
				r.roundTripsLost += uint64(m.GetCounter().GetValue())
			}
		}
	}
	r.seriesPerTarget = float64(perTarget) / float64(r.targets)
}

// readReceiver sums the receiver's counts over its peers.
func (r *fanOutResult) readReceiver(web string) error {
	m, err := scrape.Get("http://" + web + "/metrics")
	if err != nil {
		return fmt.Errorf("receiver metrics: %w", err)
	}
	sum := func(name string) uint64 { v, _ := m.Sum("udpprobe_receiver_"+name, "sender", peer); return uint64(v) }
	r.received, r.lost, r.local = sum("packets_received_total"), sum("packets_lost_total"), sum("packets_dropped_locally_total")
	r.duplicated, r.reordered = sum("packets_duplicated_total"), sum("packets_reordered_total")
	r.socketDrops = uint64(m["udpprobe_receiver_socket_drops_total"])
	return nil
}

// targetsFile writes a file_sd file of n loopback addresses on port, from
// 127.0.1.1 on, and returns its path.
func targetsFile(n int, port string) (string, error) {
	dir, err := os.MkdirTemp("", "udpprobe-bench")
	if err != nil {
		return "", err
	}
	var list []string
	for i := range n {
		list = append(list, fmt.Sprintf("127.0.%d.%d:%s", 1+i/250, 1+i%250, port))
	}
	b, err := json.Marshal([]map[string][]string{{"targets": list}})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "targets.json")
	return path, os.WriteFile(path, b, 0o644)
}

// sentToAll reads from a stopped sender's log how many data datagrams it
// sent to its n targets, from the line that ends its run (the goodbyes'
// lines, one a target, are sampled when there are many).
func sentToAll(send *proc, n int) (uint64, error) {
	rec, err := record(send, "sending stopped")
	if err != nil {
		return 0, err
	}
	targets, err := rec.uint("targets")
	if err != nil || targets != uint64(n) {
		return 0, fmt.Errorf("the sender probed %d targets, not %d (%v)", targets, n, err)
	}
	return rec.uint("sent")
}

// nativeQuantile is the q-quantile of a native histogram, as the upper
// bound of the bucket it falls in: exact to the bucket's width (a factor
// of 2^(2^-schema), 1.09 for udpprobe's histograms).
func nativeQuantile(h *dto.Histogram, q float64) float64 {
	rank := q * float64(h.GetSampleCount())
	seen := float64(h.GetZeroCount())
	if seen >= rank {
		return h.GetZeroThreshold()
	}
	base := math.Pow(2, math.Pow(2, -float64(h.GetSchema())))
	deltas := h.GetPositiveDelta()
	var idx int32
	var count int64
	for _, sp := range h.GetPositiveSpan() {
		idx += sp.GetOffset()
		for range sp.GetLength() {
			count += deltas[0]
			deltas = deltas[1:]
			if seen += float64(count); seen >= rank {
				return math.Pow(base, float64(idx)) // bucket idx is (base^(idx-1), base^idx]
			}
			idx++
		}
	}
	return math.Inf(1)
}
