package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The cache-lines table: what a datagram and its reply cost the sender in
// memory it has to fetch, counted rather than timed. sender.BenchmarkSendLoop
// (reply=echo: the sending loop and the reply path, without the kernel) runs
// under cachegrind, whose simulated caches count the same misses for the
// same code whatever the machine is doing: on a virtual machine, timed
// ratios move with the host's load, and the misses of a thousand targets'
// cold memory are what sets them apart from one target's. The last level is
// simulated as 1 MiB, the size of a core's L2 on the machines this ran on,
// which a thousand targets' memory outgrows. Each case runs twice, for
// cacheOps[0] and cacheOps[1] ops, with the collector off and one
// processor (as the sender runs: with more, the runtime's idle threads
// spin for as long as valgrind's serialised run takes, and the instruction
// counts with them), and the difference is divided by the datagrams
// between them: what is left is the loop's, without its start.
var cacheOps = [2]int{2000, 6000}

// cacheDatagramsPerOp is what one op of BenchmarkSendLoop sends: a
// millisecond of a schedule of 10,000 datagrams a second.
const cacheDatagramsPerOp = 10

// cacheCases are the benchmark's cases, one target and a thousand, with
// the round-trip histograms exposed with classic buckets and without (as
// the fan-out runs have them), that last.
var cacheCases = []struct {
	name, histograms, bench string
}{
	{"1 × 10000/s", "classic and native", "SendLoop/^targets=1$/^reply=echo$/^histograms=classic$"},
	{"1000 × 10/s", "classic and native", "SendLoop/^targets=1000$/^reply=echo$/^histograms=classic$"},
	{"1 × 10000/s", "native", "SendLoop/^targets=1$/^reply=echo$/^histograms=native$"},
	{"1000 × 10/s", "native", "SendLoop/^targets=1000$/^reply=echo$/^histograms=native$"},
}

// cachegrindRun is one run's totals of the events cachegrind counts (Ir,
// D1mr, DLmw, …), over the program and by function.
type cachegrindRun struct {
	total map[string]int64
	byFn  map[string]map[string]int64
}

// misses are the run's first-level and last-level data misses.
func misses(ev map[string]int64) (d1, ll int64) {
	return ev["D1mr"] + ev["D1mw"], ev["DLmr"] + ev["DLmw"]
}

func cacheLines(w io.Writer, _ options) error {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return fmt.Errorf("the cache-lines table needs valgrind (apt-get install valgrind): %w", err)
	}
	dir, err := os.MkdirTemp("", "udpprobe-cachelines")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "sender.test")
	if out, err := exec.Command("go", "test", "-c", "-o", bin, "./internal/sender").CombinedOutput(); err != nil {
		return fmt.Errorf("building the sender's tests: %v\n%s", err, out)
	}
	fmt.Fprintf(w, "\n## Cache lines a datagram and its reply cost the sender (cachegrind, last level 1 MiB)\n\n")
	fmt.Fprintf(w, "`sender.BenchmarkSendLoop` with `reply=echo`, %d ops less %d (%d datagrams), the collector off, one processor, per datagram:\n\n",
		cacheOps[1], cacheOps[0], (cacheOps[1]-cacheOps[0])*cacheDatagramsPerOp)
	fmt.Fprintln(w, "| targets × rate | histograms | instructions | first-level data misses | last-level data misses |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	var last map[string]float64
	for _, c := range cacheCases {
		var runs [2]cachegrindRun
		for i, n := range cacheOps {
			if runs[i], err = cachegrind(dir, bin, c.bench, n); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		per := float64((cacheOps[1] - cacheOps[0]) * cacheDatagramsPerOp)
		d1a, lla := misses(runs[0].total)
		d1b, llb := misses(runs[1].total)
		fmt.Fprintf(w, "| %s | %s | %.0f | %.2f | %.2f |\n", c.name, c.histograms, float64(runs[1].total["Ir"]-runs[0].total["Ir"])/per,
			float64(d1b-d1a)/per, float64(llb-lla)/per)
		last = map[string]float64{}
		for fn, ev := range runs[1].byFn {
			_, b := misses(ev)
			_, a := misses(runs[0].byFn[fn])
			if d := float64(b-a) / per; d >= 0.05 {
				last[fn] = d
			}
		}
	}
	fmt.Fprintf(w, "\nWhere the last case's last-level misses are, per datagram (functions with 0.05 or more):\n\n")
	fmt.Fprintln(w, "| misses | function |")
	fmt.Fprintln(w, "|---:|---|")
	for _, fn := range slices.SortedFunc(maps.Keys(last), func(a, b string) int {
		return cmp.Or(cmp.Compare(last[b], last[a]), strings.Compare(a, b))
	}) {
		fmt.Fprintf(w, "| %.2f | `%s` |\n", last[fn], strings.TrimPrefix(fn, "github.com/udpprobe/udpprobe/internal/"))
	}
	return nil
}

// cachegrind runs the benchmark bench of the test binary bin for ops ops
// under cachegrind and reads what it counted.
func cachegrind(dir, bin, bench string, ops int) (cachegrindRun, error) {
	out := filepath.Join(dir, fmt.Sprintf("cachegrind.%d", ops))
	cmd := exec.Command("valgrind", "--tool=cachegrind", "--cache-sim=yes", "--LL=1048576,16,64",
		"--cachegrind-out-file="+out, bin, "-test.run", "^$", "-test.bench", bench, "-test.benchtime", fmt.Sprintf("%dx", ops))
	cmd.Env = append(os.Environ(), "GOGC=off", "GOMAXPROCS=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return cachegrindRun{}, fmt.Errorf("valgrind: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		return cachegrindRun{}, err
	}
	defer f.Close()
	return parseCachegrind(f)
}

// parseCachegrind reads a cachegrind output file: its events line names
// the counts each cost line carries after the line number (trailing zeros
// may be left out); fn= lines name the function the lines after them are
// of.
func parseCachegrind(r io.Reader) (cachegrindRun, error) {
	run := cachegrindRun{total: map[string]int64{}, byFn: map[string]map[string]int64{}}
	var events []string
	fn := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "events:"):
			events = strings.Fields(strings.TrimPrefix(line, "events:"))
		case strings.HasPrefix(line, "fn="):
			fn = strings.TrimPrefix(line, "fn=")
		case line != "" && line[0] >= '0' && line[0] <= '9':
			if events == nil || fn == "" {
				return run, fmt.Errorf("a cost line before the events or a function: %q", line)
			}
			fields := strings.Fields(line)[1:] // after the line number
			if len(fields) > len(events) {
				return run, fmt.Errorf("more counts than events: %q", line)
			}
			if run.byFn[fn] == nil {
				run.byFn[fn] = map[string]int64{}
			}
			for i, f := range fields {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					return run, fmt.Errorf("%q: %w", line, err)
				}
				run.byFn[fn][events[i]] += n
				run.total[events[i]] += n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return run, err
	}
	if events == nil {
		return run, fmt.Errorf("no events line: not a cachegrind output file")
	}
	return run, nil
}
