package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestParseIperf reads an iperf3 3.12 UDP client report (trimmed, with 7 of
// 1000 datagrams lost) and rejects error reports.
func TestParseIperf(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-udp.json")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := parseIperf(b)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.End.Sum; s.Packets != 1000 || s.LostPackets != 7 || s.Seconds < 1 || s.Seconds > 1.001 {
		t.Fatalf("sum %+v", s)
	}
	if _, err := parseIperf([]byte(`{"error": "unable to connect to server"}`)); err == nil {
		t.Fatal("an error report parsed")
	}
	if _, err := parseIperf([]byte(`{"end": {"sum": {}}}`)); err == nil {
		t.Fatal("a report without packets parsed")
	}
}

func TestParseRcvbufErrors(t *testing.T) {
	snmp := "Icmp: InMsgs InErrors\nIcmp: 1 2\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 5 10 1478161 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdpLite: 0 0 0 0 9\n"
	if n, err := parseRcvbufErrors([]byte(snmp)); err != nil || n != 1478161 {
		t.Fatalf("snmp: %d, %v", n, err)
	}
	if n, err := parseRcvbufErrors([]byte("Udp6InDatagrams 5\nUdp6RcvbufErrors                \t42\n")); err != nil || n != 42 {
		t.Fatalf("snmp6: %d, %v", n, err)
	}
	if _, err := parseRcvbufErrors([]byte("Ip: Forwarding\nIp: 1\n")); err == nil {
		t.Fatal("no error without a Udp line")
	}
}

func TestLogRecord(t *testing.T) {
	rec := logRecord{"ts": "2026-11-24T08:47:55.123Z", "msg": "session ended with a goodbye", "last_sequence": 301589.0}
	if n, err := rec.uint("last_sequence"); err != nil || n != 301589 {
		t.Fatalf("last_sequence %d, %v", n, err)
	}
	if _, err := rec.uint("missing"); err == nil {
		t.Fatal("a missing field read")
	}
	ts, err := rec.time()
	if err != nil || !ts.Equal(time.Date(2026, 11, 24, 8, 47, 55, 123e6, time.UTC)) {
		t.Fatalf("ts %v, %v", ts, err)
	}
}

func TestParseStat(t *testing.T) {
	stat := "4242 (udp probe) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 123 45 0 0 20 0 6 0 99 1000 200\n"
	if d, err := parseStat(stat); err != nil || d != 1680*time.Millisecond {
		t.Fatalf("%v, %v; want 1.68s (168 ticks)", d, err)
	}
	if _, err := parseStat("4242 (short) S 1"); err == nil {
		t.Fatal("a short line parsed")
	}
}

// TestNativeQuantile: the quantile of a native histogram is the upper
// bound of the bucket it falls in, within the bucket factor above it.
func TestNativeQuantile(t *testing.T) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", NativeHistogramBucketFactor: 1.1})
	h.Observe(0) // the zero bucket, up to its threshold (2^-128)
	for range 98 {
		h.Observe(.001)
	}
	h.Observe(1)
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ q, lo, hi float64 }{{.005, 0, 1e-38}, {.99, .001, .00109}, {1, 1, 1.09}} {
		if got := nativeQuantile(m.GetHistogram(), c.q); got < c.lo || got > c.hi {
			t.Errorf("q%v = %v, want %v to %v", c.q, got, c.lo, c.hi)
		}
	}
}

func TestParseCPUTimes(t *testing.T) {
	stat := "cpu  213981 0 36812 1738909 2028 0 6474 88519 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
	c, err := parseCPUTimes([]byte(stat))
	if err != nil || c.total != 213981+36812+1738909+2028+6474+88519 || c.steal != 88519 {
		t.Fatalf("%+v, %v", c, err)
	}
	if _, err := parseCPUTimes([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("a line that is not cpu's parsed")
	}
}

// TestFanOutRatios: each pair's ratio is said, and the median takes only
// the pairs whose two runs kept within maxSteal.
func TestFanOutRatios(t *testing.T) {
	run := func(cpu time.Duration, sent uint64, steal float64) fanOutResult {
		return fanOutResult{sendingCPU: cpu, sentThen: sent, steal: steal}
	}
	pairs := [][2]fanOutResult{
		{run(500*time.Millisecond, 100000, 0.01), run(700*time.Millisecond, 100000, 0.02)},  // 1.40×
		{run(500*time.Millisecond, 100000, 0.21), run(600*time.Millisecond, 100000, 0.01)},  // 1.20×, stolen
		{run(500*time.Millisecond, 100000, 0.00), run(800*time.Millisecond, 100000, 0.05)},  // 1.60×
		{run(400*time.Millisecond, 100000, 0.03), run(520*time.Millisecond, 100000, 0.049)}, // 1.30×
	}
	want := "CPU per datagram with 1000 targets against one target at the same 10000/s: 1.40×, 1.20× (steal 21 %, not counted), 1.60×, 1.30×; " +
		"median of the 3 pairs within 5 % steal: 1.40×.\n"
	if got := fanOutRatios(pairs, 1000, 10000); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	want = "CPU per datagram with 1000 targets against one target at the same 10000/s: 1.20× (steal 21 %, not counted).\n" +
		"No pair ran with the hypervisor taking at most 5 % of the machine: no reading.\n"
	if got := fanOutRatios(pairs[1:2], 1000, 10000); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	want = "CPU per datagram with 1000 targets against one target at the same 10000/s: 1.40×, 1.60×; median of the 2 pairs within 5 % steal: 1.50×.\n"
	if got := fanOutRatios([][2]fanOutResult{pairs[0], pairs[2]}, 1000, 10000); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// TestParseCachegrind reads a cachegrind output file, written by hand in
// its format (a count left out at the end of a line is 0), and rejects
// what is not one.
func TestParseCachegrind(t *testing.T) {
	out := "desc: LL cache: 1048576 B, 64 B, 16-way associative\ncmd: sender.test\n" +
		"events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\n" +
		"fl=/src/a.go\nfn=main.f\n10 100 1 0 50 3 2 20 1 1\n11 5\n" +
		"fl=/src/b.go\nfn=main.g\n3 7 0 0 2 1 1\n" +
		"summary: 112 1 0 52 4 3 20 1 1\n"
	run, err := parseCachegrind(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if d1, ll := misses(run.total); run.total["Ir"] != 112 || d1 != 5 || ll != 4 {
		t.Fatalf("totals %v: %d first-level and %d last-level misses", run.total, d1, ll)
	}
	if f, g := run.byFn["main.f"], run.byFn["main.g"]; f["Ir"] != 105 || f["DLmr"] != 2 || g["Ir"] != 7 || g["DLmr"] != 1 || g["DLmw"] != 0 {
		t.Fatalf("by function %v", run.byFn)
	}
	for _, bad := range []string{"fn=main.f\n10 1\n", "events: Ir\nfn=main.f\n10 1 2\n", "events: Ir\nfn=main.f\n10 x\n", "no such file\n"} {
		if _, err := parseCachegrind(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
