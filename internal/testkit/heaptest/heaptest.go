// Package heaptest measures the test process's own heap, for tests that
// bound what a piece of state costs or check that it is all given back.
package heaptest

import "runtime"

// Live is the live heap, in bytes, after a full collection. Two
// collections, because objects with finalizers take a second one to go.
func Live() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
