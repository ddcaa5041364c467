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

// The cache-lines tables: what a datagram costs in memory that has to be
// fetched, counted rather than timed. sender.BenchmarkSendLoop (reply=echo:
// the sending loop and the reply path, without the kernel) and the
// receiver's BenchmarkHandle/timing and BenchmarkHandleMany (the receive
// path after the read, one peer and a thousand) run under cachegrind,
// whose simulated caches count the same misses for the same code whatever
// the machine is doing: on a virtual machine, timed ratios move with the
// host's load, and the misses of a thousand targets' or peers' cold
// memory are what sets them apart from one's. The last level is simulated
// as 1 MiB, the size of a core's L2 on the machines this ran on, which a
// thousand targets' memory outgrows. Each case runs twice, for ops[0] and
// ops[1] ops, with the collector off and one processor (as the daemons
// run: with more, the runtime's idle threads spin for as long as
// valgrind's serialised run takes, and the instruction counts with them),
// and the difference is divided by the datagrams between them: what is
// left is the loop's, without its start.
type cacheTable struct {
	title, pkg, columns string
	ops                 [2]int
	perOp               int // datagrams an op
	cases               []cacheCase
}

// cacheCase is one benchmark of a table, and what its row says of it.
type cacheCase struct{ row, bench string }

var cacheTables = []cacheTable{
	{
		title: "Cache lines a datagram and its reply cost the sender: `sender.BenchmarkSendLoop` with `reply=echo` (one op, a millisecond of 10,000 datagrams a second)",
		pkg:   "./internal/sender", columns: "targets × rate | histograms", ops: [2]int{2000, 6000}, perOp: 10,
		cases: []cacheCase{
			{"1 × 10000/s | classic and native", "SendLoop/^targets=1$/^reply=echo$/^histograms=classic$"},
			{"1000 × 10/s | classic and native", "SendLoop/^targets=1000$/^reply=echo$/^histograms=classic$"},
			{"1 × 10000/s | native", "SendLoop/^targets=1$/^reply=echo$/^histograms=native$"},
			{"1000 × 10/s | native", "SendLoop/^targets=1000$/^reply=echo$/^histograms=native$"},
		},
	},
	{
		title: "Cache lines a datagram costs the receiver after the read: `receiver.BenchmarkHandle/timing` and `BenchmarkHandleMany` (one op, one datagram)",
		pkg:   "./internal/receiver", columns: "peers", ops: [2]int{100000, 300000}, perOp: 1,
		cases: []cacheCase{
			{"1", "^BenchmarkHandle$/^timing$"},
			{"1000, heard in turn", "^BenchmarkHandleMany$"},
		},
	},
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
	dir, err := os.MkdirTemp("", "udpprobe-cachelines")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, t := range cacheTables {
		if err := t.write(w, dir); err != nil {
			return err
		}
	}
	return nil
}

// write runs the table's cases and writes it, and where the last case's
// last-level misses are.
func (t cacheTable) write(w io.Writer, dir string) error {
	bin := filepath.Join(dir, filepath.Base(t.pkg)+".test")
	if out, err := exec.Command("go", "test", "-c", "-o", bin, t.pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("building %s's tests: %v\n%s", t.pkg, err, out)
	}
	per := float64((t.ops[1] - t.ops[0]) * t.perOp)
	fmt.Fprintf(w, "\n## %s\n\n", t.title)
	fmt.Fprintf(w, "cachegrind, last level 1 MiB; %d ops less %d (%.0f datagrams), the collector off, one processor; per datagram:\n\n",
		t.ops[1], t.ops[0], per)
	fmt.Fprintf(w, "| %s | instructions | first-level data misses | last-level data misses |\n", t.columns)
	fmt.Fprintf(w, "|%s---:|---:|---:|\n", strings.Repeat("---|", strings.Count(t.columns, "|")+1))
	var last map[string]float64
	for _, c := range t.cases {
		var runs [2]cachegrindRun
		for i, n := range t.ops {
			var err error
			if runs[i], err = cachegrind(dir, bin, c.bench, n); err != nil {
				return fmt.Errorf("%s: %w", c.bench, err)
			}
		}
		d1a, lla := misses(runs[0].total)
		d1b, llb := misses(runs[1].total)
		fmt.Fprintf(w, "| %s | %.0f | %.2f | %.2f |\n", c.row, float64(runs[1].total["Ir"]-runs[0].total["Ir"])/per,
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
