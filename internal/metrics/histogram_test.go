package metrics

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// clientGolang is the histogram component.histogramVec makes, alone.
func clientGolang(bounds []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "h", Help: "h", Buckets: bounds,
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: maxNativeBuckets,
		NativeHistogramMinResetDuration: time.Hour,
	})
}

// written is what a metric writes, without its creation time and labels.
func written(t *testing.T, m prometheus.Metric) *dto.Histogram {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	out.Histogram.CreatedTimestamp = nil
	return out.Histogram
}

// TestHistogramAsClientGolang: for the same observations, the histogram
// writes what client_golang's writes, classic buckets and native ones,
// with classic buckets and without: values spread over seven decades,
// values on the native and the classic bounds and next to them, zero, the
// zero threshold, 100 native buckets, and more (both halve the resolution,
// once or twice).
func TestHistogramAsClientGolang(t *testing.T) {
	edges := []float64{0, zeroThreshold, 1e-9, 1, 2, 0.5, 0.25, 1024}
	for i := -40; i <= 40; i++ {
		b := math.Pow(2, float64(i)/8) // the native bounds, as client_golang's table has them or not
		edges = append(edges, b, math.Nextafter(b, 0), math.Nextafter(b, 2*b))
	}
	for _, b := range DelayBuckets {
		edges = append(edges, b, math.Nextafter(b, 0), math.Nextafter(b, 1))
	}
	r := rand.New(rand.NewPCG(1, 2))
	logUniform := func(lo, hi float64) []float64 { // n values, log-uniform in [lo, hi)
		var vs []float64
		for range 500 {
			vs = append(vs, lo*math.Pow(hi/lo, r.Float64()))
		}
		return vs
	}
	buckets := func(n int) []float64 { // one value in each of n native buckets in a row
		var vs []float64
		for k := range n {
			vs = append(vs, math.Pow(2, (float64(k)-0.5)/8))
		}
		return vs
	}
	cases := map[string][]float64{
		"100 buckets":             buckets(100),
		"101 buckets":             buckets(101),
		"none":                    nil,
		"one":                     {0.0123},
		"zero":                    {0, 0, zeroThreshold},
		"edges":                   edges,
		"round trips":             logUniform(50e-6, 0.2),
		"a route change":          append(logUniform(1e-3, 1.1e-3), logUniform(20e-3, 21e-3)...),
		"over 100 buckets":        logUniform(1e-6, 1e1),
		"far over 100 buckets":    logUniform(1e-9, 600),
		"gaps of one, two, three": {1, 1.1, 1.1 * 1.1 * 1.1, 1.1 * 1.1 * 1.1 * 1.1 * 1.1 * 1.1, 2, 4, 4.0001},
	}
	for name, vs := range cases {
		for _, bounds := range [][]float64{DelayBuckets, nil} {
			theirs := clientGolang(bounds)
			ours := newHistogram(theirs.Desc(), nil, bounds)
			for _, v := range vs {
				ours.Observe(v)
				theirs.Observe(v)
			}
			got, want := written(t, ours), written(t, theirs)
			if !proto.Equal(got, want) {
				t.Errorf("%s, classic buckets %v:\n got %v\nwant %v", name, bounds != nil, got, want)
			}
			if bounds == nil {
				t.Logf("%s: %d values, schema %d, %d spans", name, len(vs), want.GetSchema(), len(want.PositiveSpan))
			}
		}
	}
}

// TestHistogramIgnores: a negative, NaN or infinite value is not observed.
func TestHistogramIgnores(t *testing.T) {
	h := newHistogram(clientGolang(nil).Desc(), nil, DelayBuckets)
	for _, v := range []float64{-1, math.NaN(), math.Inf(1), math.Inf(-1), -zeroThreshold} {
		h.Observe(v)
	}
	h.Observe(0.5)
	got := written(t, h)
	if got.GetSampleCount() != 1 || got.GetSampleSum() != 0.5 || got.GetZeroCount() != 0 || len(got.PositiveDelta) != 1 {
		t.Fatalf("%v: want 0.5 alone", got)
	}
}

// TestHistogramConcurrent: observations and scrapes at once (for the race
// detector), and every observation in the last scrape.
func TestHistogramConcurrent(t *testing.T) {
	h := newHistogram(clientGolang(nil).Desc(), nil, DelayBuckets)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				h.Observe(float64(g*1000+i) * 1e-6)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			written(t, h)
		}
	})
	wg.Wait()
	if n := written(t, h).GetSampleCount(); n != 4000 {
		t.Fatalf("%d observations, want 4000", n)
	}
}

// BenchmarkHistogram: one observation, in a histogram of many that the
// caches hold, and among 1,000 histograms observed in turn (each one's
// memory cold by its turn, as a sender's targets' round-trip times are):
// ours and client_golang's.
func BenchmarkHistogram(b *testing.B) {
	for _, n := range []int{1, 1000} {
		ours := make([]prometheus.Observer, n)
		theirs := make([]prometheus.Observer, n)
		for i := range n {
			c := clientGolang(nil)
			ours[i], theirs[i] = newHistogram(c.Desc(), nil, nil), c
		}
		for name, hs := range map[string][]prometheus.Observer{"ours": ours, "client_golang": theirs} {
			b.Run(name+"/"+map[int]string{1: "one", 1000: "1000"}[n], func(b *testing.B) {
				r := rand.New(rand.NewPCG(3, 4))
				vs := make([]float64, 4096)
				for i := range vs {
					vs[i] = 1e-4 * math.Pow(100, r.Float64())
				}
				i := 0
				for b.Loop() {
					hs[i%n].Observe(vs[i%len(vs)])
					i++
				}
			})
		}
	}
}

// TestHistogramLayout: what an observation touches first is the first
// cache line, and the size is one of Go's size classes that start on a
// line.
func TestHistogramLayout(t *testing.T) {
	var h histogram
	if size := unsafe.Sizeof(h); size != 192 {
		t.Errorf("a histogram is %d bytes, want 192", size)
	}
	if end := unsafe.Offsetof(h.withClassic) + unsafe.Sizeof(h.withClassic); end > 64 {
		t.Errorf("the observation's fields end at byte %d, past the first line", end)
	}
}
