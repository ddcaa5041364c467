// Package metrics defines every Prometheus metric udpprobe exports. The
// structs are built on a caller's Registerer, so main owns one registry and
// tests build their own; nothing registers on the default registry.
//
// Naming follows the Prometheus conventions: the udpprobe_ prefix, base
// units, _total on counters, and raw counters only (ratios belong in PromQL).
// docs/metrics.md is the user-facing table and must agree with this file.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "udpprobe"

// Invalid datagram reasons: the closed set of values of the reason label.
const (
	ReasonTooShort = "too_short"
	ReasonMagic    = "bad_magic"
	ReasonVersion  = "bad_version"
	ReasonHeader   = "bad_header"
	ReasonName     = "bad_name"
	ReasonReply    = "unexpected_reply"
	ReasonAuth     = "auth"
)

// InvalidReasons lists every reason, so all series exist from the start.
var InvalidReasons = []string{ReasonTooShort, ReasonMagic, ReasonVersion, ReasonHeader, ReasonName, ReasonReply, ReasonAuth}

// Bucket layouts, shared with the dashboard and rules.
var (
	GapLengthBuckets     = []float64{1, 2, 3, 5, 10, 20, 50, 100, 1000, 10000}
	ReorderExtentBuckets = []float64{1, 2, 3, 5, 10, 20, 50, 100, 1000}
	// DelayBuckets, for one-way delay and round-trip time, span 50µs to 10s.
	DelayBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// VariationBuckets, for IPDV, span 10µs to 1s.
	VariationBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	// OutageBuckets, for loss periods in time, span 10ms to an hour.
	OutageBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	// LatenessBuckets, for the sender's schedule, span 1µs to 1s.
	LatenessBuckets = []float64{.000001, .00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
)

// Histograms is how histograms are exposed.
type Histograms uint8

const (
	// ClassicAndNative exposes every histogram with its classic buckets
	// (the _bucket series every Prometheus reads) beside its native
	// buckets (read by a Prometheus that scrapes native histograms).
	ClassicAndNative Histograms = iota
	// NativeOnly leaves the classic buckets out: a histogram is one series
	// to a Prometheus that scrapes native histograms, and only _count,
	// _sum and the +Inf bucket to one that does not.
	NativeOnly
)

// buckets returns the classic buckets to declare: none when native only.
func (h Histograms) buckets(classic []float64) []float64 {
	if h == NativeOnly {
		return nil // with a native bucket factor, nil means no classic buckets
	}
	return classic
}

// component registers the metrics of one subsystem on reg, each carrying
// own as constant labels. Constant labels cost nothing at a scrape, where
// a wrapping Registerer makes every metric's description anew.
type component struct {
	reg prometheus.Registerer
	sub string
	own prometheus.Labels
}

// histogramVec registers a histogram with the classic buckets given (none
// for a native-only one) and the native histogram settings every udpprobe
// histogram shares.
func (c component) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace:                       namespace,
		Subsystem:                       c.sub,
		Name:                            name,
		Help:                            help,
		ConstLabels:                     c.own,
		Buckets:                         buckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  100,
		NativeHistogramMinResetDuration: time.Hour,
	}, labels)
	c.reg.MustRegister(h)
	return h
}

func (c component) counter(name, help string) prometheus.Counter {
	m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: c.sub, Name: name, Help: help, ConstLabels: c.own})
	c.reg.MustRegister(m)
	return m
}

func (c component) gauge(name, help string) prometheus.Gauge {
	m := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: c.sub, Name: name, Help: help, ConstLabels: c.own})
	c.reg.MustRegister(m)
	return m
}

func (c component) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	m := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: c.sub, Name: name, Help: help, ConstLabels: c.own,
	}, labels)
	c.reg.MustRegister(m)
	return m
}

func (c component) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: c.sub, Name: name, Help: help, ConstLabels: c.own,
	}, labels)
	c.reg.MustRegister(m)
	return m
}

// desc describes a metric of the component that a collector makes.
func (c component) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, c.sub, name), help, labels, c.own)
}

// NewWebConfigReloaded registers the gauge that says whether the web
// configuration file, as last read, is the one served (1), or is invalid
// and the last good one is served instead (0).
func NewWebConfigReloaded(reg prometheus.Registerer) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "web_config_last_reload_successful",
		Help:      "1 if the web configuration file, as last read, validated and is served; 0 while it is invalid and the last good one is served.",
	})
	reg.MustRegister(g)
	return g
}
