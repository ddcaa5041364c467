// Command bench runs udpprobe side by side with iperf3 and irtt on loopback
// and prints, as Markdown tables, what each delivered and what it cost:
//
//  1. udpprobe sender → receiver at each offered rate: delivered rate,
//     network loss, socket drops (udpprobe's count and the kernel's), CPU
//     seconds and peak RSS of each process (udpprobe.go);
//  2. iperf3 -u -l 64 at the same rates, with its loss and CPU (peers.go);
//  3. udpprobe round trips at a low rate against irtt at the same interval:
//     CPU per packet of each pair;
//  4. one sender probing many targets (127.0.x.y, one reflecting receiver
//     hearing each as a peer) against one target at the same aggregate
//     rate, and the many at ten times the rate: CPU per datagram, pacing
//     lateness, memory, series per target, scrape time, exact counts
//     (fanout.go);
//  5. with -sections cache-lines, the cache lines a datagram and its reply
//     cost the sender, one target against a thousand, and a datagram the
//     receiver, one peer against a thousand, counted by cachegrind rather
//     than timed (cachelines.go; apt-get install valgrind);
//
// and the ratios the performance targets are stated in. `make bench` runs
// it after the Go benchmarks; docs/performance.md holds its results.
//
// Everything runs on 127.0.0.1. Each run starts fresh processes, and the
// kernel's UDP receive-buffer error count (/proc/net/snmp) is read around
// it, so the machine should be otherwise quiet. On a virtual machine the
// hypervisor's steal time (/proc/stat) is read around the low-rate and
// many-targets runs too: a host busy with other guests makes every
// wake-up and cache miss dearer, and a ratio of two runs with much steal
// between them compares two machines, so such runs are said and not
// counted (maxSteal). -fan-out-runs repeats the one-target and
// many-target runs in turn, for a median ratio.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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
	flag.IntVar(&o.fanOut, "fan-out", 1000, "targets of the many-targets runs, at most 2000 (the receiver's peer limit)")
	flag.Float64Var(&o.fanOutRate, "fan-out-rate", 10, "datagrams per second to each of them")
	flag.IntVar(&o.fanOutRuns, "fan-out-runs", 1, "pairs of runs, one target then the many, taken in turn")
	sections := flag.String("sections", "rates,low,fan-out", "tables to make: rates (offered rates), low (round trips against irtt), fan-out (many targets), cache-lines (the sender's and receiver's cache misses, under valgrind)")
	flag.Parse()
	o.sections = map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		if s = strings.TrimSpace(s); !slices.ContainsFunc(tables, func(t table) bool { return t.name == s }) {
			fatalf("-sections: no table %q", s)
		}
		o.sections[strings.TrimSpace(s)] = true
	}
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
	fanOut                 int
	fanOutRate             float64
	fanOutRuns             int
	sections               map[string]bool
}

// table is one section of the report, what makes it, and the programs it
// runs.
type table struct {
	name  string
	make  func(io.Writer, options) error
	needs func(options) []string
}

// tables are the tables the harness makes, in order.
var tables = []table{
	{"rates", highRates, func(o options) []string { return []string{o.udpprobe, o.iperf3} }},
	{"low", lowRates, func(o options) []string { return []string{o.udpprobe, o.irtt} }},
	{"fan-out", fanOut, func(o options) []string { return []string{o.udpprobe} }},
	{"cache-lines", cacheLines, func(options) []string { return []string{"go", "valgrind"} }},
}

func run(w io.Writer, o options) error {
	for _, t := range tables {
		if !o.sections[t.name] {
			continue
		}
		for _, bin := range t.needs(o) {
			if _, err := exec.LookPath(bin); err != nil {
				return fmt.Errorf("%s is needed (make build; apt-get install iperf3 irtt valgrind): %w", bin, err)
			}
		}
	}
	fmt.Fprintf(w, "# udpprobe bench, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "`%s`\n\n", strings.Join(os.Args, " "))
	for _, t := range tables {
		if o.sections[t.name] {
			if err := t.make(w, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// highRates writes the first table: udpprobe and iperf3 at each offered
// rate, and the highest rate each sustained without a socket drop.
func highRates(w io.Writer, o options) error {
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
				cpu100[0] = r.send.cpu.Seconds() + r.recv.cpu.Seconds()
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
			cpu100[1] = r.send.cpu.Seconds() + r.recv.cpu.Seconds()
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
	return nil
}

// lowRates writes the second table: CPU per packet of udpprobe one-way,
// udpprobe with round trips and irtt at the same low rate.
func lowRates(w io.Writer, o options) error {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "## %.0f packets/s for %v: udpprobe one-way (the default) and with round trips, irtt (round trips)\n\n", o.lowRate, o.lowDuration)
	fmt.Fprintln(w, "| tool | packets | CPU s (sender/client + receiver/server) | CPU µs per packet | peak RSS MiB | steal % |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	var low []lowResult
	worst := 0.0
	for _, f := range []func(options) (lowResult, error){oneWayLow, roundTrips, irttRun} {
		var r lowResult
		steal, err := stolen(func() (err error) {
			r, err = f(o)
			return err
		})
		if err != nil {
			return err
		}
		worst = max(worst, steal)
		fmt.Fprintf(w, "| %s | %d | %.3f + %.3f | %.1f | %.1f / %.1f | %.1f |\n", r.tool, r.packets,
			r.client.cpu.Seconds(), r.server.cpu.Seconds(), r.perPacket(), mib(r.client.rss), mib(r.server.rss), 100*steal)
		low = append(low, r)
	}
	fmt.Fprintln(w)
	irtt := low[2].perPacket()
	fmt.Fprintf(w, "CPU per packet against irtt's: udpprobe one-way %.2f, with round trips %.2f",
		low[0].perPacket()/irtt, low[1].perPacket()/irtt)
	if worst > maxSteal {
		fmt.Fprintf(w, " (steal reached %.0f %% in a run: not a reading)", 100*worst)
	}
	fmt.Fprintln(w, ".")
	return nil
}

// lowResult is one low-rate run.
type lowResult struct {
	tool           string
	packets        uint64
	client, server usage
}

func (r lowResult) perPacket() float64 {
	return (r.client.cpu + r.server.cpu).Seconds() * 1e6 / float64(max(r.packets, 1))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
