// Package scrape reads Prometheus metrics as a scrape sees them, for tests
// and the bench: from a registry, or from the text of a metrics page parsed
// by expfmt. Nothing here parses the exposition format by hand.
package scrape

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples are one scrape's samples by series, each written as the text
// format writes it: `name{label="value",...}` with the labels in order of
// their names, or the bare name without labels. A label with an empty
// value is left out, as Prometheus leaves it out. A histogram gives its
// name_count, name_sum and name_bucket{...,le="..."} series.
type Samples map[string]float64

// Gather collects g.
func Gather(g prometheus.Gatherer) (Samples, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	s := Samples{}
	for _, mf := range mfs {
		s.add(mf)
	}
	return s, nil
}

// Parse reads a metrics page in the text format.
func Parse(r io.Reader) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics page: %w", err)
	}
	s := Samples{}
	for _, mf := range mfs {
		s.add(mf)
	}
	return s, nil
}

// Get fetches and parses the metrics page at url, waiting up to 5 s.
func Get(url string) (Samples, error) {
	var s Samples
	err := Fetch(url, "", func(r io.Reader, _ http.Header) (err error) {
		s, err = Parse(r)
		return err
	})
	return s, err
}

// GetFamilies fetches the metrics at url in the protobuf format, as a
// Prometheus that scrapes native histograms asks for them, waiting up to
// 5 s: native histograms come whole, each one series.
func GetFamilies(url string) ([]*dto.MetricFamily, error) {
	var mfs []*dto.MetricFamily
	err := Fetch(url, string(expfmt.FmtProtoDelim), func(r io.Reader, h http.Header) error {
		dec := expfmt.NewDecoder(r, expfmt.ResponseFormat(h))
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err == io.EOF {
				return nil
			} else if err != nil {
				return fmt.Errorf("metrics page: %w", err)
			}
			mfs = append(mfs, mf)
		}
	})
	return mfs, err
}

// Fetch gets url, asking for the format accept (or any), waiting up to
// 5 s, and hands the body and its headers to read.
func Fetch(url, accept string, read func(io.Reader, http.Header) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return read(resp.Body, resp.Header)
}

// Value returns the sample of series (see Samples) and whether there is one.
func (s Samples) Value(series string) (float64, bool) {
	v, ok := s[series]
	return v, ok
}

// Sum adds up the samples of name whose labels include the given pairs
// (name, value, name, value, ...), whatever their other labels, as
// PromQL's sum does, and says how many there were.
func (s Samples) Sum(name string, labels ...string) (sum float64, n int) {
	var want []string
	for i := 0; i+1 < len(labels); i += 2 {
		want = append(want, fmt.Sprintf(`%s="%s"`, labels[i], escape.Replace(labels[i+1])))
	}
	for k, v := range s {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || rest != "" && rest[0] != '{' {
			continue
		}
		if !all(want, func(pair string) bool {
			return strings.Contains(rest, "{"+pair+",") || strings.Contains(rest, ","+pair+",") ||
				strings.Contains(rest, "{"+pair+"}") || strings.Contains(rest, ","+pair+"}")
		}) {
			continue
		}
		sum += v
		n++
	}
	return sum, n
}

func all(xs []string, f func(string) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

// Series writes the series of name with the given label pairs (name,
// value, name, value, ...) as Samples keys it.
func Series(name string, labels ...string) string {
	pairs := make([]*dto.LabelPair, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, &dto.LabelPair{Name: &labels[i], Value: &labels[i+1]})
	}
	return key(name, pairs)
}

func (s Samples) add(mf *dto.MetricFamily) {
	name := mf.GetName()
	for _, m := range mf.GetMetric() {
		labels := m.GetLabel()
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			s[key(name, labels)] = m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			s[key(name, labels)] = m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			s[key(name, labels)] = m.GetUntyped().GetValue()
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.GetHistogram()
			s[key(name+"_count", labels)] = float64(h.GetSampleCount())
			s[key(name+"_sum", labels)] = h.GetSampleSum()
			for _, b := range h.GetBucket() {
				s[key(name+"_bucket", withLE(labels, b.GetUpperBound()))] = float64(b.GetCumulativeCount())
			}
			// A registry leaves the +Inf bucket implicit; a page writes it.
			s[key(name+"_bucket", withLE(labels, math.Inf(1)))] = float64(h.GetSampleCount())
		case dto.MetricType_SUMMARY:
			q := m.GetSummary()
			s[key(name+"_count", labels)] = float64(q.GetSampleCount())
			s[key(name+"_sum", labels)] = q.GetSampleSum()
		}
	}
}

func withLE(labels []*dto.LabelPair, le float64) []*dto.LabelPair {
	name, value := "le", strconv.FormatFloat(le, 'g', -1, 64)
	return append(slices.Clone(labels), &dto.LabelPair{Name: &name, Value: &value})
}

var escape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func key(name string, labels []*dto.LabelPair) string {
	labels = slices.DeleteFunc(slices.Clone(labels), func(l *dto.LabelPair) bool { return l.GetValue() == "" })
	if len(labels) == 0 {
		return name
	}
	sorted := slices.SortedFunc(slices.Values(labels), func(a, b *dto.LabelPair) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
	var b strings.Builder
	b.WriteString(name)
	for i, l := range sorted {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, l.GetName(), escape.Replace(l.GetValue()))
	}
	b.WriteByte('}')
	return b.String()
}
