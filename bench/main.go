// Command bench runs udpprobe side by side with iperf3 and irtt on loopback
// and prints, as Markdown tables, what each delivered and what it cost:
//
//  1. udpprobe sender → receiver at each offered rate: delivered rate,
//     network loss, socket drops (udpprobe's count and the kernel's), CPU
//     seconds and peak RSS of each process;
//  2. iperf3 -u -l 64 at the same rates, with its loss and CPU;
//  3. udpprobe round trips at a low rate against irtt at the same interval:
//     CPU per packet of each pair;
//
// and the ratios the performance targets are stated in. `make bench` runs
// it after the Go benchmarks; docs/performance.md holds its results.
//
// Everything runs on 127.0.0.1. Each run starts fresh processes, and the
// kernel's UDP receive-buffer error count (/proc/net/snmp) is read around
// it, so the machine should be otherwise quiet.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.udpprobe, "udpprobe", "bin/udpprobe", "udpprobe binary")
	flag.StringVar(&o.iperf3, "iperf3", "iperf3", "iperf3 binary")
	flag.StringVar(&o.irtt, "irtt", "irtt", "irtt binary")
	rates := flag.String("rates", "10000,50000,100000,200000", "offered rates, datagrams per second")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each high-rate run (whole seconds: iperf3 takes no fraction)")
	flag.IntVar(&o.runs, "runs", 1, "runs of udpprobe at each rate")
	flag.Float64Var(&o.lowRate, "low-rate", 1000, "packets per second of the udpprobe and irtt comparison")
	flag.DurationVar(&o.lowDuration, "low-duration", 10*time.Second, "length of the low-rate comparison")
	flag.Parse()
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			fatalf("-rates: %q is not a rate", f)
		}
		o.rates = append(o.rates, r)
	}
	if err := run(os.Stdout, o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

type options struct {
	udpprobe, iperf3, irtt string
	rates                  []float64
	duration               time.Duration
	runs                   int
	lowRate                float64
	lowDuration            time.Duration
}

func run(w io.Writer, o options) error {
	for _, bin := range []string{o.udpprobe, o.iperf3, o.irtt} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is needed (make build; apt-get install iperf3 irtt): %w", bin, err)
		}
	}
	fmt.Fprintf(w, "# udpprobe bench, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "`%s`\n\n", strings.Join(os.Args, " "))
	fmt.Fprintln(w, "## Offered rate on loopback, 64-byte datagrams for iperf3, udpprobe's smallest for udpprobe")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tool | offered /s | sent | delivered /s | network loss | socket drops (tool / kernel) | accounted | CPU s (send + receive) | peak RSS MiB (send / receive) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---:|---:|")
	best := map[string]float64{}
	var cpu100 [2]float64
	for _, rate := range o.rates {
		clean := true
		for range o.runs {
			r, err := oneWay(o, rate)
			if err != nil {
				return fmt.Errorf("udpprobe at %.0f/s: %w", rate, err)
			}
			fmt.Fprintln(w, r.row())
			clean = clean && r.socketDrops == 0 && r.kernelDrops == 0 && r.exact()
			if rate == 100000 {
				cpu100[0] = r.sendCPU.Seconds() + r.recvCPU.Seconds()
			}
		}
		if clean {
			best["udpprobe"] = max(best["udpprobe"], rate)
		}
		r, err := iperf(o, rate)
		if err != nil {
			return fmt.Errorf("iperf3 at %.0f/s: %w", rate, err)
		}
		fmt.Fprintln(w, r.row())
		if r.lost == 0 && r.kernelDrops == 0 {
			best["iperf3"] = max(best["iperf3"], rate)
		}
		if rate == 100000 {
			cpu100[1] = r.sendCPU.Seconds() + r.recvCPU.Seconds()
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Highest offered rate without a socket drop: udpprobe %.0f/s, iperf3 %.0f/s", best["udpprobe"], best["iperf3"])
	if best["iperf3"] > 0 {
		fmt.Fprintf(w, " (%.1f×)", best["udpprobe"]/best["iperf3"])
	}
	fmt.Fprintln(w, ".")
	if cpu100[0] > 0 && cpu100[1] > 0 {
		fmt.Fprintf(w, "CPU at 100,000/s: udpprobe %.2f s, iperf3 %.2f s (%.2f×).\n", cpu100[0], cpu100[1], cpu100[0]/cpu100[1])
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "## %.0f packets/s for %v: udpprobe one-way (the default) and with round trips, irtt (round trips)\n\n", o.lowRate, o.lowDuration)
	fmt.Fprintln(w, "| tool | packets | CPU s (sender/client + receiver/server) | CPU µs per packet | peak RSS MiB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	var low []lowResult
	for _, f := range []func(options) (lowResult, error){oneWayLow, roundTrips, irttRun} {
		r, err := f(o)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "| %s | %d | %.3f + %.3f | %.1f | %.1f / %.1f |\n", r.tool, r.packets,
			r.clientCPU.Seconds(), r.serverCPU.Seconds(), r.perPacket(), mib(r.clientRSS), mib(r.serverRSS))
		low = append(low, r)
	}
	fmt.Fprintln(w)
	irtt := low[2].perPacket()
	fmt.Fprintf(w, "CPU per packet against irtt's: udpprobe one-way %.2f, with round trips %.2f.\n",
		low[0].perPacket()/irtt, low[1].perPacket()/irtt)
	return nil
}

// oneWayResult is one udpprobe run at an offered rate.
type oneWayResult struct {
	rate                        float64
	elapsed                     time.Duration // first send to the sender's stop
	sent                        uint64        // the goodbye's last sequence number + 1
	received, lost, local       uint64
	late, duplicated, reordered uint64
	socketDrops, kernelDrops    uint64
	sendErrors, missed          uint64
	sendCPU, recvCPU            time.Duration
	sendRSS, recvRSS            int64
	delivered                   float64
}

// exact: every datagram sent is accounted for as received or dropped
// locally, and nothing is reported lost, late, duplicated or reordered on
// a path that did none of it.
func (r oneWayResult) exact() bool {
	return r.received+r.local == r.sent && r.lost == 0 && r.late == 0 && r.duplicated == 0 &&
		r.reordered == 0 && r.socketDrops == r.kernelDrops && r.sendErrors == 0
}

func (r oneWayResult) row() string {
	return fmt.Sprintf("| udpprobe | %.0f | %d | %.0f | %d | %d / %d | %s | %.2f + %.2f | %.1f / %.1f |",
		r.rate, r.sent, r.delivered, r.lost, r.socketDrops, r.kernelDrops, yes(r.exact(), fmt.Sprintf("missed slots %d", r.missed)),
		r.sendCPU.Seconds(), r.recvCPU.Seconds(), mib(r.sendRSS), mib(r.recvRSS))
}

func yes(ok bool, detail string) string {
	if ok {
		return "exact"
	}
	return "NO (" + detail + ")"
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// oneWay runs a receiver and a sender at rate for o.duration.
func oneWay(o options, rate float64) (oneWayResult, error) {
	r := oneWayResult{rate: rate}
	udp, web, sweb := freeUDP(), freeTCP(), freeTCP()
	recv, err := startReady(o.udpprobe, "receiving", []string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + web,
		"UDPPROBE_LOSS_TIMEOUT=500ms", "UDPPROBE_SUMMARY_INTERVAL=0", "UDPPROBE_LOG_FORMAT=json"}, "receiver")
	if err != nil {
		return r, err
	}
	defer recv.kill()
	kernel0, err := rcvbufErrors()
	if err != nil {
		return r, err
	}
	send, err := startReady(o.udpprobe, `"sending"`, []string{"UDPPROBE_TARGETS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + sweb,
		"UDPPROBE_RATE=" + strconv.FormatFloat(rate, 'f', -1, 64), "UDPPROBE_NAME=bench", "UDPPROBE_LOG_FORMAT=json"}, "sender")
	if err != nil {
		return r, err
	}
	defer send.kill()
	time.Sleep(o.duration)
	sm, err := scrape(sweb)
	if err != nil {
		return r, fmt.Errorf("sender metrics: %w", err)
	}
	r.sendErrors, r.missed = sm.get("udpprobe_sender_send_errors_total"), sm.get("udpprobe_sender_missed_slots_total")
	if r.sendCPU, r.sendRSS, err = send.stop(30 * time.Second); err != nil {
		return r, err
	}
	if r.sent, r.elapsed, err = session(send); err != nil {
		return r, err
	}
	// The receiver settles the last gaps one loss timeout after the goodbye:
	// wait until every datagram is accounted for (or 10 s), and a loss
	// timeout more for anything still pending.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := r.readReceiver(web); err != nil {
			return r, err
		}
		if r.received+r.lost+r.local >= r.sent || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(600 * time.Millisecond)
	if err := r.readReceiver(web); err != nil {
		return r, err
	}
	kernel1, err := rcvbufErrors()
	if err != nil {
		return r, err
	}
	r.kernelDrops = kernel1 - kernel0
	if r.recvCPU, r.recvRSS, err = recv.stop(30 * time.Second); err != nil {
		return r, err
	}
	r.delivered = float64(r.received) / r.elapsed.Seconds()
	return r, nil
}

// session reads from a stopped sender's log how many datagrams it sent (the
// goodbye carries the last sequence number) and for how long.
func session(send *proc) (sent uint64, elapsed time.Duration, err error) {
	began, err := send.record("sending")
	if err != nil {
		return 0, 0, err
	}
	bye, err := send.record("session ended with a goodbye")
	if err != nil {
		return 0, 0, err
	}
	last, err := bye.uint("last_sequence")
	if err != nil {
		return 0, 0, err
	}
	t0, err := began.time()
	if err != nil {
		return 0, 0, err
	}
	t1, err := bye.time()
	if err != nil {
		return 0, 0, err
	}
	return last + 1, t1.Sub(t0), nil
}

// readReceiver takes the receiver's counts for peer "bench" from its metrics.
func (r *oneWayResult) readReceiver(web string) error {
	m, err := scrape(web)
	if err != nil {
		return fmt.Errorf("receiver metrics: %w", err)
	}
	peer := `{peer="bench"}`
	r.received = m.get("udpprobe_receiver_packets_received_total" + peer)
	r.lost = m.get("udpprobe_receiver_packets_lost_total" + peer)
	r.local = m.get("udpprobe_receiver_packets_dropped_locally_total" + peer)
	r.late = m.get("udpprobe_receiver_packets_late_total" + peer)
	r.duplicated = m.get("udpprobe_receiver_packets_duplicated_total" + peer)
	r.reordered = m.get("udpprobe_receiver_packets_reordered_total" + peer)
	r.socketDrops = m.get("udpprobe_receiver_socket_drops_total")
	return nil
}

// iperfResult is one iperf3 run.
type iperfResult struct {
	rate             float64
	sent, lost       uint64
	delivered        float64
	kernelDrops      uint64
	sendCPU, recvCPU time.Duration
	sendRSS, recvRSS int64
}

func (r iperfResult) row() string {
	return fmt.Sprintf("| iperf3 | %.0f | %d | %.0f | %d (its loss) | – / %d | – | %.2f + %.2f | %.1f / %.1f |",
		r.rate, r.sent, r.delivered, r.lost, r.kernelDrops, r.sendCPU.Seconds(), r.recvCPU.Seconds(), mib(r.sendRSS), mib(r.recvRSS))
}

// iperfReport is the part of iperf3's JSON report the bench reads.
type iperfReport struct {
	End struct {
		Sum struct {
			Packets     uint64  `json:"packets"`
			LostPackets uint64  `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

func parseIperf(b []byte) (iperfReport, error) {
	var rep iperfReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("iperf3 report: %w", err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("iperf3: %s", rep.Error)
	}
	if rep.End.Sum.Packets == 0 || rep.End.Sum.Seconds == 0 {
		return rep, errors.New("iperf3 report: no packets")
	}
	return rep, nil
}

// iperf runs iperf3 -u -l 64 at rate datagrams/s: -b counts payload bits.
func iperf(o options, rate float64) (iperfResult, error) {
	r := iperfResult{rate: rate}
	port := strconv.Itoa(freeTCPPort())
	srv, err := startReady(o.iperf3, "Server listening", nil, "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", port)
	if err != nil {
		return r, err
	}
	defer srv.kill()
	kernel0, err := rcvbufErrors()
	if err != nil {
		return r, err
	}
	secs := strconv.Itoa(max(1, int(o.duration.Round(time.Second).Seconds())))
	cli, err := start(o.iperf3, nil, "-c", "127.0.0.1", "-p", port, "-u", "-l", "64",
		"-b", strconv.FormatFloat(rate*64*8, 'f', 0, 64), "-t", secs, "-J")
	if err != nil {
		return r, err
	}
	defer cli.kill()
	if r.sendCPU, r.sendRSS, err = cli.wait(o.duration + 30*time.Second); err != nil {
		return r, err
	}
	if r.recvCPU, r.recvRSS, err = srv.wait(10 * time.Second); err != nil {
		return r, err
	}
	rep, err := parseIperf(cli.output())
	if err != nil {
		return r, err
	}
	kernel1, err := rcvbufErrors()
	if err != nil {
		return r, err
	}
	r.kernelDrops = kernel1 - kernel0
	r.sent, r.lost = rep.End.Sum.Packets, rep.End.Sum.LostPackets
	r.delivered = float64(r.sent-r.lost) / rep.End.Sum.Seconds
	return r, nil
}

// lowResult is one low-rate round-trip run.
type lowResult struct {
	tool                 string
	packets              uint64
	clientCPU, serverCPU time.Duration
	clientRSS, serverRSS int64
}

func (r lowResult) perPacket() float64 {
	return (r.clientCPU + r.serverCPU).Seconds() * 1e6 / float64(max(r.packets, 1))
}

// oneWayLow runs a sender and a receiver at the low rate.
func oneWayLow(o options) (lowResult, error) {
	r, err := lowRun(o, "udpprobe one-way", nil, nil)
	if err != nil {
		err = fmt.Errorf("udpprobe one-way: %w", err)
	}
	return r, err
}

// roundTrips runs a round-trip sender against a reflecting receiver.
func roundTrips(o options) (lowResult, error) {
	r, err := lowRun(o, "udpprobe round trip",
		[]string{"UDPPROBE_REFLECT=true", "UDPPROBE_REFLECT_RATE=" + strconv.FormatFloat(2*o.lowRate, 'f', -1, 64)},
		[]string{"UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=100ms"})
	if err != nil {
		err = fmt.Errorf("udpprobe round trips: %w", err)
	}
	return r, err
}

// lowRun runs a receiver and a sender, with extra variables each, at the
// low rate.
func lowRun(o options, tool string, recvEnv, sendEnv []string) (lowResult, error) {
	r := lowResult{tool: tool}
	udp := freeUDP()
	rate := strconv.FormatFloat(o.lowRate, 'f', -1, 64)
	recv, err := startReady(o.udpprobe, "receiving", append([]string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + freeTCP(),
		"UDPPROBE_SUMMARY_INTERVAL=0", "UDPPROBE_LOG_FORMAT=json"}, recvEnv...), "receiver")
	if err != nil {
		return r, err
	}
	defer recv.kill()
	send, err := start(o.udpprobe, append([]string{"UDPPROBE_TARGETS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + freeTCP(),
		"UDPPROBE_RATE=" + rate, "UDPPROBE_NAME=bench", "UDPPROBE_LOG_FORMAT=json"}, sendEnv...), "sender")
	if err != nil {
		return r, err
	}
	defer send.kill()
	time.Sleep(o.lowDuration)
	if r.clientCPU, r.clientRSS, err = send.stop(30 * time.Second); err != nil {
		return r, err
	}
	if r.packets, _, err = session(send); err != nil {
		return r, err
	}
	if r.serverCPU, r.serverRSS, err = recv.stop(30 * time.Second); err != nil {
		return r, err
	}
	return r, nil
}

// irttReport is the part of irtt's JSON output the bench reads.
type irttReport struct {
	Stats struct {
		PacketsSent     uint64 `json:"packets_sent"`
		PacketsReceived uint64 `json:"packets_received"`
	} `json:"stats"`
}

// irttRun runs irtt's client against its server at the same interval.
func irttRun(o options) (lowResult, error) {
	r, err := irttRound(o)
	if err != nil {
		err = fmt.Errorf("irtt: %w", err)
	}
	return r, err
}

func irttRound(o options) (lowResult, error) {
	r := lowResult{tool: "irtt"}
	addr := freeUDP()
	srv, err := startReady(o.irtt, "ListenerStart", nil, "server", "-b", addr, "-i", "0")
	if err != nil {
		return r, err
	}
	defer srv.kill()
	dir, err := os.MkdirTemp("", "udpprobe-bench")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "irtt.json")
	interval := time.Duration(float64(time.Second) / o.lowRate)
	cli, err := start(o.irtt, nil, "client", "-i", interval.String(), "-d", o.lowDuration.String(), "-Q", "-o", out, addr)
	if err != nil {
		return r, err
	}
	defer cli.kill()
	if r.clientCPU, r.clientRSS, err = cli.wait(o.lowDuration + 30*time.Second); err != nil {
		return r, err
	}
	if r.serverCPU, r.serverRSS, err = srv.stop(10 * time.Second); err != nil {
		return r, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	var rep irttReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return r, fmt.Errorf("irtt report: %w", err)
	}
	r.packets = rep.Stats.PacketsSent
	if r.packets == 0 {
		return r, errors.New("irtt sent nothing")
	}
	return r, nil
}

// proc is a child process with its merged output kept in memory.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
	term bool // stop sent SIGTERM
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

func start(bin string, env []string, args ...string) (*proc, error) {
	p := &proc{name: filepath.Base(bin) + " " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// startReady starts bin and waits up to 10 s until its output says ready;
// if it does not, the process is killed.
func startReady(bin, ready string, env []string, args ...string) (*proc, error) {
	p, err := start(bin, env, args...)
	if err != nil {
		return nil, err
	}
	if err := p.await(ready, 10*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// await waits until the output contains s.
func (p *proc) await(s string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if bytes.Contains(p.output(), []byte(s)) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before saying %q: %v\n%s", p.name, s, p.err, p.output())
		default:
		}
	}
	return fmt.Errorf("%s did not say %q within %v\n%s", p.name, s, timeout, p.output())
}

// stop sends SIGTERM and waits.
func (p *proc) stop(timeout time.Duration) (time.Duration, int64, error) {
	p.term = true
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(timeout)
}

// wait waits for a clean exit and returns the CPU time and peak RSS.
func (p *proc) wait(timeout time.Duration) (time.Duration, int64, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return 0, 0, fmt.Errorf("%s did not exit within %v\n%s", p.name, timeout, p.output())
	}
	st := p.cmd.ProcessState
	// irtt's server ends on SIGTERM by the signal, or with 128 + 15.
	ws := st.Sys().(syscall.WaitStatus)
	byTerm := p.term && (ws.Signaled() && ws.Signal() == syscall.SIGTERM || ws.ExitStatus() == 128+int(syscall.SIGTERM))
	if p.err != nil && !byTerm {
		return 0, 0, fmt.Errorf("%s: %v\n%s", p.name, p.err, p.output())
	}
	ru := st.SysUsage().(*syscall.Rusage)
	return st.UserTime() + st.SystemTime(), ru.Maxrss << 10, nil
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		<-p.done
	}
}

// record returns the JSON log line with message msg.
func (p *proc) record(msg string) (logRecord, error) {
	for _, line := range bytes.Split(p.output(), []byte("\n")) {
		var rec logRecord
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == msg {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("%s did not log %q\n%s", p.name, msg, p.output())
}

// logRecord is one line of udpprobe's JSON log.
type logRecord map[string]any

// uint returns a numeric field.
func (r logRecord) uint(key string) (uint64, error) {
	v, ok := r[key].(float64)
	if !ok || v < 0 {
		return 0, fmt.Errorf("log line %v has no %s", r, key)
	}
	return uint64(v), nil
}

// time is when the line was logged (zap's ISO 8601, to the millisecond).
func (r logRecord) time() (time.Time, error) {
	ts, _ := r["ts"].(string)
	return time.Parse("2006-01-02T15:04:05.000Z0700", ts)
}

// metrics are the samples of one scrape, by series as written.
type metrics map[string]float64

func (m metrics) get(series string) uint64 { return uint64(m[series]) }

func scrape(addr string) (metrics, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseMetrics(b), nil
}

// parseMetrics reads the text exposition's samples; comments are skipped.
func parseMetrics(b []byte) metrics {
	m := metrics{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// rcvbufErrors is the kernel's count of UDP datagrams dropped for a full
// receive buffer, over all sockets (IPv4 and IPv6).
func rcvbufErrors() (uint64, error) {
	var total uint64
	for _, f := range []string{"/proc/net/snmp", "/proc/net/snmp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		n, err := parseRcvbufErrors(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		total += n
	}
	return total, nil
}

// parseRcvbufErrors reads RcvbufErrors from /proc/net/snmp (a "Udp:" header
// line and a value line) or /proc/net/snmp6 ("Udp6RcvbufErrors value").
func parseRcvbufErrors(b []byte) (uint64, error) {
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
			return strconv.ParseUint(f[1], 10, 64)
		}
		if len(f) > 0 && f[0] == "Udp:" && i+1 < len(lines) {
			vals := strings.Fields(lines[i+1])
			for j, name := range f {
				if name == "RcvbufErrors" && j < len(vals) && vals[0] == "Udp:" {
					return strconv.ParseUint(vals[j], 10, 64)
				}
			}
		}
	}
	return 0, errors.New("no RcvbufErrors")
}

func freeUDP() string {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func freeTCP() string { return "127.0.0.1:" + strconv.Itoa(freeTCPPort()) }

func freeTCPPort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
