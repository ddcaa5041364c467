package receiver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/testkit/heaptest"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// admitPeers sends one datagram from each of n senders named prefix0,
// prefix1, …, and checks that all were admitted.
func admitPeers(tb testing.TB, tt *testTable, prefix string, n int) {
	tb.Helper()
	b := make([]byte, 128)
	from := sinkAddr(tb)
	for i := range n {
		h := wire.Header{Name: fmt.Appendf(nil, "%s%d", prefix, i), Target: []byte(testTarget), Session: 1, SendTime: wall0}
		if err := wire.Encode(b, &h); err != nil {
			tb.Fatal(err)
		}
		tt.Handle(b, from, Instant{Wall: wall0, Mono: int64(i)})
	}
	if tt.Len() != n {
		tb.Fatalf("%d peers in the table, want %d", tt.Len(), n)
	}
}

// newQuietTable is a table that logs nothing: the test's observer would
// keep every line.
func newQuietTable(tb testing.TB, opts Options) *testTable {
	opts.Logger = zap.NewNop()
	return newTable(tb, opts)
}

// forget expires every peer: housekeeping an hour on.
func forget(tb testing.TB, tt *testTable) {
	tb.Helper()
	tt.Housekeep(at(float64(time.Hour / time.Millisecond)))
	if tt.Len() != 0 {
		tb.Fatalf("%d peers left after their expiry", tt.Len())
	}
}

// TestForgottenPeersFreeMemory: 10,000 senders, each sending once and then
// forgotten, leave the heap where it was before them: their state, their
// series and the hash tables that held them (rebuilt smaller as the peers
// go) are all freed, and a second round does the same.
func TestForgottenPeersFreeMemory(t *testing.T) {
	const n = 10000
	r := newQuietTable(t, Options{MaxPeers: n, PeerExpiry: time.Minute})
	base := heaptest.Live()
	admitPeers(t, r, "first", n)
	peak := heaptest.Live()
	forget(t, r)
	first := heaptest.Live()
	admitPeers(t, r, "second", n)
	forget(t, r)
	second := heaptest.Live()
	runtime.KeepAlive(r)
	t.Logf("heap: %d B before, %d B with %d peers (%d B each), %d B after forgetting them, %d B after a second round",
		base, peak, n, (peak-base)/n, first, second)
	// What may stay: maps of at most 64 entries, rebuilt no smaller.
	const slack = 64 << 10
	if first-base > slack {
		t.Errorf("forgetting %d peers left %d B more on the heap than before them", n, first-base)
	}
	if second-base > slack {
		t.Errorf("a second round of %d peers left %d B more on the heap than before the first", n, second-base)
	}
	if per := (peak - base) / n; per > 32<<10 {
		t.Errorf("%d B a peer, over the documented 32 KiB", per)
	}
}

// BenchmarkPeerState reports the heap one peer with one stream takes:
// the tracker's ring and the peer's series.
func BenchmarkPeerState(b *testing.B) {
	const n = 1000
	var total int64
	for i := 0; b.Loop(); i++ {
		r := newQuietTable(b, Options{MaxPeers: n})
		base := heaptest.Live()
		admitPeers(b, r, fmt.Sprintf("r%d-", i), n)
		total += heaptest.Live() - base
		runtime.KeepAlive(r)
	}
	b.ReportMetric(float64(total)/float64(b.N*n), "B/peer")
}

// BenchmarkScrape is one scrape of a receiver with the given number of
// peers, as Prometheus's text format: its time and memory bound what
// UDPPROBE_MAX_PEERS can serve (docs/hardening.md).
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tt := newQuietTable(b, Options{MaxPeers: n})
			admitPeers(b, tt, "p", n)
			h := promhttp.HandlerFor(tt.reg, promhttp.HandlerOpts{})
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			var size int
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size)/(1<<20), "MiB/scrape")
		})
	}
}
