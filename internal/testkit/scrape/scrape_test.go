package scrape

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestGatherAndParseAgree: a registry read directly and its text page give
// the same samples, keyed as the text format writes them.
func TestGatherAndParseAgree(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"peer", "b"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h", Buckets: []float64{.5, 1}})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	reg.MustRegister(c, h, g)
	c.WithLabelValues(`a"\`, "2").Add(3)
	h.Observe(.7)
	h.Observe(2)
	g.Set(-1.5)
	direct, err := Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	page := `# HELP g g
# TYPE g gauge
g -1.5
# HELP h_seconds h
# TYPE h_seconds histogram
h_seconds_bucket{le="0.5"} 0
h_seconds_bucket{le="1"} 1
h_seconds_bucket{le="+Inf"} 2
h_seconds_sum 2.7
h_seconds_count 2
# HELP x_total x
# TYPE x_total counter
x_total{peer="a\"\\",b="2"} 3
`
	parsed, err := Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	want := Samples{
		`g`: -1.5, `h_seconds_bucket{le="0.5"}`: 0, `h_seconds_bucket{le="1"}`: 1, `h_seconds_bucket{le="+Inf"}`: 2,
		`h_seconds_sum`: 2.7, `h_seconds_count`: 2, `x_total{b="2",peer="a\"\\"}`: 3,
	}
	for name, s := range map[string]Samples{"gathered": direct, "parsed": parsed} {
		if len(s) != len(want) {
			t.Errorf("%s: %d samples %v, want %d", name, len(s), s, len(want))
		}
		for k, v := range want {
			if got, ok := s.Value(k); !ok || got != v {
				t.Errorf("%s: %s = %v (%v), want %v", name, k, got, ok, v)
			}
		}
	}
	if k := Series("x_total", "peer", `a"\`, "b", "2"); k != `x_total{b="2",peer="a\"\\"}` {
		t.Errorf("Series wrote %s", k)
	}
	if sum, n := direct.Sum("x_total", "b", "2"); sum != 3 || n != 1 {
		t.Errorf("Sum(x_total, b=2) = %v over %d series, want 3 over 1", sum, n)
	}
	if sum, n := direct.Sum("h_seconds_bucket"); sum != 3 || n != 3 {
		t.Errorf("Sum(h_seconds_bucket) = %v over %d series, want 3 over 3", sum, n)
	}
	if _, n := direct.Sum("x_total", "b", "3"); n != 0 {
		t.Errorf("Sum matched b=3")
	}
	if _, n := direct.Sum("x"); n != 0 {
		t.Errorf("Sum(x) matched x_total")
	}
	if k := Series("x_total", "peer", "a", "b", ""); k != `x_total{peer="a"}` {
		t.Errorf("Series kept an empty label: %s", k)
	}
}
