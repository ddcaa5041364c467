package receiver

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/wire"
)

var testKey = []byte("a receiver test key of 32 bytes!")

// signedDatagram is datagram with a tag, signed under key.
func signedDatagram(t testing.TB, key []byte, name string, seq uint64) []byte {
	t.Helper()
	a, err := wire.NewAuth([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 120)
	if err := wire.Encode(b, &wire.Header{Name: []byte(name), Target: []byte(testTarget), Session: 1, Seq: seq, TagLen: wire.TagSize}); err != nil {
		t.Fatal(err)
	}
	a.Sign(b, 0)
	return b
}

// TestAuthRejects: with a key, a datagram without a tag or signed under
// another key is an auth invalid that creates no peer; a warning names the
// latest source once per interval; signed datagrams are counted, and
// allocate nothing.
func TestAuthRejects(t *testing.T) {
	tt := newTable(t, Options{Keys: [][]byte{testKey}})
	from := netip.MustParseAddrPort("192.0.2.7:40000")
	tt.Handle(datagram(t, "plain", 1, 0, 0), from, at(0))
	tt.Handle(signedDatagram(t, []byte("some other key, 16 bytes or more"), "forged", 0), from, at(0))
	if n := testutil.ToFloat64(tt.m.Invalid.WithLabelValues(metrics.ReasonAuth)); n != 2 || tt.Len() != 0 {
		t.Fatalf("%v auth invalids and %d peers, want 2 and 0", n, tt.Len())
	}
	tt.Housekeep(at(1000))
	lines := tt.logs.FilterMessageSnippet("failed authentication").All()
	if len(lines) != 1 || lines[0].ContextMap()["ignored"] != uint64(2) ||
		lines[0].ContextMap()["last_source"] != "192.0.2.7:40000" {
		t.Fatalf("warnings: %v", lines)
	}

	b := signedDatagram(t, testKey, "alpha", 0)
	tt.Handle(b, from, at(0))
	a, _ := wire.NewAuth([][]byte{testKey})
	var seq uint64
	allocs := testing.AllocsPerRun(100, func() {
		seq++
		wire.PutSeq(b, seq)
		a.Sign(b, 0)
		tt.Handle(b, from, Instant{Wall: wall0, Mono: int64(seq)})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per authenticated datagram", allocs)
	}
	if got := tt.sample(t, "packets_received_total", "alpha"); got != float64(seq+1) {
		t.Fatalf("received %v, want %d", got, seq+1)
	}
	if n := testutil.ToFloat64(tt.m.Invalid.WithLabelValues(metrics.ReasonAuth)); n != 2 {
		t.Fatalf("%v auth invalids after signed datagrams, want still 2", n)
	}
}
