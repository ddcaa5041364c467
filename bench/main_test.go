package main

import (
	"os"
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
