package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

var update = flag.Bool("update", false, "rewrite testdata/run.golden from the summary it checks")

// reflector runs a reflecting receiver on listen until the test ends and
// returns its address.
func reflector(t *testing.T, listen string) string {
	t.Helper()
	rcv, err := receiver.New(receiver.Options{ListenAddress: listen, Reflect: true, ReflectRate: 10000,
		LossTimeout: 200 * time.Millisecond, MaxPeers: 10, PeerExpiry: time.Hour, ReceiveBuffer: 4 << 20,
		Logger: zaptest.NewLogger(t), Metrics: metrics.NewReceiver(prometheus.NewPedanticRegistry(), metrics.NativeOnly)})
	if err != nil {
		t.Fatal(err)
	}
	testproc.Background(t, "receiver", rcv.Run)
	return rcv.Addr().String()
}

// seqs are the valid data datagrams among ds, by sequence number, in the
// order the relay delivered them.
func seqs(ds []impair.Delivery) (order []uint64, set map[uint64]bool) {
	set = map[uint64]bool{}
	for _, d := range ds {
		if d.Valid && !d.Goodbye && !set[d.Seq] {
			order = append(order, d.Seq)
			set[d.Seq] = true
		}
	}
	return order, set
}

// TestRunAgainstRelay runs udpprobe run through the impairment relay,
// which drops a tenth of the data and holds a tenth behind two later
// datagrams, each way: the JSON summary is the relay's record, exactly,
// and the exit code follows the loss threshold.
func TestRunAgainstRelay(t *testing.T) {
	relay, err := impair.New("127.0.0.1:0", reflector(t, "127.0.0.1:0"), impair.DataOnly(1, 10, 10), impair.DataOnly(2, 10, 10))
	if err != nil {
		t.Fatal(err)
	}
	relay.Start()
	t.Cleanup(func() { relay.Close() })
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"run", "--duration", "1s", "--rate", "200", "--loss-timeout", "200ms",
		"--name", "oneshot", "--output", "json", "--max-loss", "1%", relay.Addr()}, &stdout, &stderr)
	var got summary
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v in %q (stderr %q)", err, stdout.String(), stderr.String())
	}

	_, up := seqs(relay.Delivered())
	back, answered := seqs(relay.Returned())
	want := summary{Target: relay.Addr(), Duration: got.Duration, Sent: got.Sent, Received: uint64(len(answered)),
		Upstream: got.Sent - uint64(len(up)), Downstream: uint64(len(up) - len(answered))}
	want.Lost = want.Upstream + want.Downstream
	want.LossRatio = float64(want.Lost) / float64(want.Sent)
	var highest uint64
	for _, seq := range back { // replies come back in the order the relay sent them
		if seq+1 < highest {
			want.Reordered++
		}
		highest = max(highest, seq+1)
	}
	var gap uint64
	for seq := range got.Sent {
		if answered[seq] {
			gap = 0
			continue
		}
		if gap++; gap == 1 {
			want.LossPeriods++
		}
		want.LongestLossPeriod = max(want.LongestLossPeriod, gap)
	}
	want.RTT, want.Jitter = got.RTT, got.Jitter // times: checked below
	if got != want {
		t.Fatalf("summary\n got %+v\nwant %+v (the relay's record)", got, want)
	}
	if want.Upstream == 0 || want.Downstream == 0 || want.Reordered == 0 || want.LongestLossPeriod < 2 {
		t.Fatalf("the relay lost %d up and %d down and reordered %d, the longest loss period %d: want all of them",
			want.Upstream, want.Downstream, want.Reordered, want.LongestLossPeriod)
	}
	if r := got.RTT; !(r.Min > 0 && r.Min <= r.Median && r.Median <= r.P99 && r.P99 <= r.Max && r.Max < 0.2) || got.Jitter <= 0 {
		t.Errorf("round-trip times %+v, jitter %v: want 0 < min ≤ median ≤ p99 ≤ max < the loss timeout", r, got.Jitter)
	}
	if code != exitFailure || !strings.Contains(stderr.String(), "threshold crossed: round-trip loss") {
		t.Errorf("exit %d, stderr %q: want 1 and the loss threshold named (%.1f%% lost, above 1%%)",
			code, stderr.String(), 100*got.LossRatio)
	}
	t.Logf("%d sent: %d lost upstream, %d downstream, %d reordered, %d loss periods, as the relay did",
		got.Sent, got.Upstream, got.Downstream, got.Reordered, got.LossPeriods)

	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"run", "--duration", "300ms", "--rate", "200", "--loss-timeout", "200ms",
		"--name", "oneshot", "--max-loss", "60%", "--max-rtt-p99", "1s", relay.Addr()}, &stdout, &stderr); code != exitOK {
		t.Errorf("exit %d within the thresholds, want 0; stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "rtt min/median/p99/max") {
		t.Errorf("no text summary: %q", stdout.String())
	}
}

// TestRunText checks the human summary against a golden file.
func TestRunText(t *testing.T) {
	s := summary{Target: "rx:6464", Duration: 10.0021, Sent: 1000, Received: 975, Lost: 20, Upstream: 12,
		Downstream: 8, Withheld: 5, Duplicated: 1, Reordered: 3, Late: 2, LossRatio: 0.02,
		Jitter: 0.0001234, LossPeriods: 7, LongestLossPeriod: 6}
	s.RTT.Min, s.RTT.Median, s.RTT.P99, s.RTT.Max = 0.000412, 0.0005, 0.0031, 0.0125
	var b bytes.Buffer
	if err := s.writeText(&b); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "run.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Fatalf("summary\n%s\nwant (%s)\n%s", b.String(), golden, want)
	}
}

// TestRunInterrupted: Ctrl-C (SIGINT) ends a run early, and the summary of
// what was sent so far is printed, with exit code 0.
func TestRunInterrupted(t *testing.T) {
	bin := testproc.Build(t, ".")
	p := testproc.Start(t, nil, bin, "run", "--duration", "1m", "--rate", "100", "--loss-timeout", "100ms",
		"--name", "interrupted", "--output", "json", reflector(t, "127.0.0.1:0"))
	time.Sleep(500 * time.Millisecond) // a few dozen probes
	if err := p.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code := p.State().ExitCode(); code != exitOK {
		t.Fatalf("exit %d, want 0:\n%s", code, strings.Join(p.Lines(), "\n"))
	}
	out := strings.Join(slices.DeleteFunc(p.Lines(), func(l string) bool { return strings.HasPrefix(l, "udpprobe:") }), "\n")
	var s summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if s.Sent == 0 || s.Sent > 1000 || s.Received != s.Sent || s.Lost != 0 || s.Duration > 10 {
		t.Fatalf("summary %+v: want what half a second sent, all answered", s)
	}
}

// TestRunIPv6: udpprobe run over IPv6, against a udpprobe reflector and
// against udpprobe's STAMP reflector on ::1: every datagram answered, none
// lost, the target named as it was given.
func TestRunIPv6(t *testing.T) {
	target := reflector(t, "[::1]:0")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"run", "--duration", "300ms", "--rate", "100", "--loss-timeout", "200ms",
		"--name", "six", "--output", "json", target}, &stdout, &stderr)
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v in %q (stderr %q)", code, err, stdout.String(), stderr.String())
	}
	if !strings.HasPrefix(target, "[::1]:") || s.Target != target || s.Sent == 0 || s.Received != s.Sent || s.Lost != 0 {
		t.Fatalf("summary %+v against %s: want every datagram answered over IPv6", s, target)
	}
	runSTAMP(t, "[::1]:0")
}

// TestRunSTAMP runs udpprobe run against udpprobe's own STAMP reflector:
// every test packet answered, none lost, the reflector's time left out
// of the round trips.
func TestRunSTAMP(t *testing.T) { runSTAMP(t, "127.0.0.1:0") }

func runSTAMP(t *testing.T, listen string) {
	t.Helper()
	rcv, err := receiver.New(receiver.Options{ListenAddress: listen, STAMPListenAddress: listen, ReflectRate: 10000,
		LossTimeout: 200 * time.Millisecond, MaxPeers: 10, PeerExpiry: time.Hour, ReceiveBuffer: 4 << 20,
		Logger: zaptest.NewLogger(t), Metrics: metrics.NewReceiver(prometheus.NewPedanticRegistry(), metrics.NativeOnly)})
	if err != nil {
		t.Fatal(err)
	}
	testproc.Background(t, "receiver", rcv.Run)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"run", "--duration", "300ms", "--rate", "100", "--loss-timeout", "200ms",
		"--name", "stamper", "--output", "json", "stamp://" + rcv.STAMPAddr().String()}, &stdout, &stderr)
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v in %q (stderr %q)", code, err, stdout.String(), stderr.String())
	}
	if s.Sent == 0 || s.Received != s.Sent || s.Lost != 0 || !(s.RTT.Min > 0 && s.RTT.Max < 0.2) {
		t.Fatalf("summary %+v from %s: want every test packet answered in time", s, rcv.STAMPAddr())
	}
}

// TestRunUsage: bad flags and a missing target are usage errors.
func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{
		{"run"},
		{"run", "a:1", "b:2"},
		{"run", "--rate", "0", "a:1"},
		{"run", "--max-loss", "101%", "a:1"},
		{"run", "--max-loss", "lots", "a:1"},
		{"run", "--output", "xml", "a:1"},
		{"run", "--duration", "0s", "a:1"},
		{"run", "--name", "no spaces", "a:1"},
		{"run", "--bogus", "a:1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%q: exit %d, want %d; stderr %q", args, code, exitUsage, stderr.String())
		}
	}
}
