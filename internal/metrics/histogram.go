package metrics

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A histogram is one series' histogram where there are many series, each
// observed now and then: a sender's round-trip times, one series per
// target. By the time a target's next reply comes, with a thousand
// targets, its series' memory has left the processor's caches, and
// client_golang's histogram reaches its native buckets through a
// sync.Map, a chain of cache misses an observation (a tenth of what a
// datagram cost the sender). Here an observation touches two cache lines
// or three: the counts under a mutex, and one element of an array of
// native buckets.
//
// It exposes what client_golang's histogram exposes with the options of
// component.histogramVec (bucket factor 1.1, so schema 3; at most 100
// native buckets; the default zero threshold), for the same observations:
// TestHistogramAsClientGolang compares the two. One difference, beyond
// 100 populated buckets: both halve the resolution, but this one never
// resets its counts (client_golang resets a histogram an hour after it
// last did, with NativeHistogramMinResetDuration). It takes finite values
// of at least 0 (times, lengths); it ignores any other. Its native buckets
// span the keys observed, kept at schema 3 whatever it exposes: for times
// in whole nanoseconds, 1 ns to 2^63 ns, at most 505 (4 KB); from a
// nanosecond to the 10-minute loss timeout, at most 315.
//
// It is a prometheus.Metric of its own, of desc with the label pairs given.
type histogram struct {
	// What an observation reads and writes, but for classic buckets and
	// zeros, in one cache line: by the next observation, with many series,
	// the histogram is cold.
	mu    sync.Mutex
	count uint64
	sum   float64
	// native are the schema-3 buckets from key low on: native[i] counts
	// the values of key low+i.
	native []uint64
	low    int
	// withClassic: bounds is not nil, so that a histogram without classic
	// buckets reads no further than this line.
	withClassic bool

	bounds  []float64 // classic upper bounds, shared; nil: native only
	classic []uint64  // per classic bucket, the last for +Inf; nil: native only
	zero    uint64    // at most the zero threshold
	filled  int       // native buckets with a count
	created *timestamppb.Timestamp
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	// Pads the histogram to 192 bytes, a size class of Go's allocator
	// whose objects start on a cache line, so that the fields before the
	// blank line above share one line (TestHistogramLayout).
	_ [24]byte
}

// Native histograms: client_golang's schema for a bucket factor of 1.1,
// its default zero threshold, and the bucket limit component.histogramVec
// sets.
const (
	nativeSchema     = 3
	zeroThreshold    = prometheus.DefNativeHistogramZeroThreshold
	maxNativeBuckets = 100
)

// schemaBounds are the fractions (of math.Frexp) at which schema 3's
// buckets end: 2^(i/8 - 1), as client_golang has them.
var schemaBounds = [1 << nativeSchema]float64{
	0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
	0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
}

// newHistogram returns an empty histogram, a metric of desc with the
// label pairs given (sorted by name, the constant ones among them), with
// the classic upper bounds given (nil: native only), created now.
func newHistogram(desc *prometheus.Desc, labels []*dto.LabelPair, bounds []float64) *histogram {
	h := &histogram{desc: desc, labels: labels, bounds: bounds, withClassic: bounds != nil, created: timestamppb.New(time.Now())}
	if bounds != nil {
		h.classic = make([]uint64, len(bounds)+1)
	}
	return h
}

// nativeKey is the schema-3 bucket of v > 0: the bucket whose upper bound,
// 2^(key/8), is the first at or above v.
func nativeKey(v float64) int {
	frac, exp := math.Frexp(v)
	return sort.SearchFloat64s(schemaBounds[:], frac) + (exp-1)*len(schemaBounds)
}

// Observe adds v, a finite value of at least 0.
func (h *histogram) Observe(v float64) {
	if !(v >= 0) || math.IsInf(v, 1) {
		return
	}
	classic := -1
	if h.withClassic {
		classic = sort.SearchFloat64s(h.bounds, v) // the first bound at or above v
	}
	key := 0
	if v > zeroThreshold {
		key = nativeKey(v)
	}
	h.mu.Lock()
	h.count++
	h.sum += v
	if classic >= 0 {
		h.classic[classic]++
	}
	if v <= zeroThreshold {
		h.zero++
	} else {
		h.add(key)
	}
	h.mu.Unlock()
}

// add counts one value in native bucket key, widening the array to it.
func (h *histogram) add(key int) {
	switch {
	case len(h.native) == 0:
		h.native, h.low = make([]uint64, 1, 8), key
	case key < h.low:
		grown := make([]uint64, len(h.native)+h.low-key, cap(h.native)+h.low-key)
		copy(grown[h.low-key:], h.native)
		h.native, h.low = grown, key
	case key >= h.low+len(h.native):
		h.native = append(h.native, make([]uint64, key-h.low-len(h.native)+1)...)
	}
	if h.native[key-h.low] == 0 {
		h.filled++
	}
	h.native[key-h.low]++
}

// Desc is the histogram's description.
func (h *histogram) Desc() *prometheus.Desc { return h.desc }

// Write writes the histogram as client_golang's does: the cumulative
// classic buckets, and the native ones at schema 3, or coarser as many as
// it takes to keep to maxNativeBuckets.
func (h *histogram) Write(out *dto.Metric) error {
	h.mu.Lock()
	count, sum, zero, filled := h.count, h.sum, h.zero, h.filled
	classic := append([]uint64(nil), h.classic...)
	native, low := append([]uint64(nil), h.native...), h.low
	h.mu.Unlock()

	his := &dto.Histogram{
		SampleCount:      proto.Uint64(count),
		SampleSum:        proto.Float64(sum),
		CreatedTimestamp: h.created,
		Bucket:           make([]*dto.Bucket, len(h.bounds)),
		ZeroThreshold:    proto.Float64(zeroThreshold),
		ZeroCount:        proto.Uint64(zero),
	}
	var cum uint64
	for i, b := range h.bounds {
		cum += classic[i]
		his.Bucket[i] = &dto.Bucket{CumulativeCount: proto.Uint64(cum), UpperBound: proto.Float64(b)}
	}
	schema := int32(nativeSchema)
	for filled > maxNativeBuckets && schema > -4 {
		native, low, filled = halve(native, low)
		schema--
	}
	his.Schema = proto.Int32(schema)
	// With no observation the zero threshold, which is not 0, still says
	// it is a native histogram: client_golang adds an empty span only where
	// the threshold is 0.
	his.PositiveSpan, his.PositiveDelta = spans(native, low)
	out.Histogram = his
	out.Label = h.labels
	return nil
}

// halve merges pairs of buckets into the buckets of the next coarser
// schema: bucket k goes into bucket ⌈k/2⌉, whose range is that of 2k−1 and
// 2k together. It returns the merged buckets, the key of the first and how
// many have a count.
func halve(native []uint64, low int) ([]uint64, int, int) {
	if len(native) == 0 {
		return nil, 0, 0
	}
	half := func(k int) int { // ⌈k/2⌉: division truncates towards 0
		if k > 0 {
			k++
		}
		return k / 2
	}
	newLow := half(low)
	merged := make([]uint64, half(low+len(native)-1)-newLow+1)
	filled := 0
	for i, c := range native {
		j := half(low+i) - newLow
		if c > 0 && merged[j] == 0 {
			filled++
		}
		merged[j] += c
	}
	return merged, newLow, filled
}

// spans encodes the buckets with a count as client_golang does: spans of
// consecutive buckets, a gap of one or two empty buckets filled in rather
// than starting a new span, and the counts as deltas from the bucket
// before.
func spans(native []uint64, low int) ([]*dto.BucketSpan, []int64) {
	var (
		ss     []*dto.BucketSpan
		deltas []int64
		prev   int64
		next   int // the key after the last one written
	)
	for i, c := range native {
		if c == 0 {
			continue
		}
		key := low + i
		gap := int32(key - next)
		if len(ss) == 0 || gap > 2 {
			ss = append(ss, &dto.BucketSpan{Offset: proto.Int32(gap), Length: proto.Uint32(0)})
		} else {
			for range gap {
				*ss[len(ss)-1].Length++
				deltas = append(deltas, -prev)
				prev = 0
			}
		}
		*ss[len(ss)-1].Length++
		deltas = append(deltas, int64(c)-prev)
		prev = int64(c)
		next = key + 1
	}
	return ss, deltas
}
