package oracle

import (
	"reflect"
	"testing"
)

func TestClassify(t *testing.T) {
	got := Classify([]uint64{0, 3, 4, 5, 1, 2, 2, 9}, 11)
	want := Want{
		Received: 7, Lost: 5, Duplicated: 1, Reordered: 2, Expected: 12,
		Gaps:    []uint64{3, 2}, // 6 7 8, then 10 11 after the goodbye
		Extents: []uint64{3, 4},
		N:       []uint64{3, 0}, // 1 right after 3 4 5; 2 right after 1, lower: reordered, but not 1-reordered
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got := Classify(nil, 5); !reflect.DeepEqual(got, Want{}) {
		t.Fatalf("empty delivery: %+v", got)
	}
}
