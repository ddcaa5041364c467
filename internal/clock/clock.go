// Package clock is the seam between udpprobe's loops and time: the sender
// and the receiver read the time and wait through a Clock, the real one in
// production, a fake one (internal/testkit/fakeclock) in tests that must not
// depend on how fast a loaded machine wakes them; and what the kernel knows
// of the clock's accuracy (Kernel), for one-way delays and STAMP's error
// estimates.
package clock

import (
	"context"
	"time"
)

// Clock reads the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer for one goroutine's waits.
	NewTimer() Timer
}

// Timer waits. It is reused across waits, so a loop that waits at every
// datagram allocates nothing; it is not safe for concurrent use.
type Timer interface {
	// Sleep waits for d, or until ctx is done, and reports whether all of
	// d passed.
	Sleep(ctx context.Context, d time.Duration) bool
}

// Real is the system's clock.
var Real Clock = real{}

type real struct{}

func (real) Now() time.Time { return time.Now() }

func (real) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &realTimer{t}
}

type realTimer struct{ t *time.Timer }

func (r *realTimer) Sleep(ctx context.Context, d time.Duration) bool {
	r.t.Reset(d)
	select {
	case <-ctx.Done():
		r.t.Stop()
		return false
	case <-r.t.C:
		return true
	}
}

// MaxErrorCeiling is the largest maximum error the kernel reports, that of
// a clock left unsynchronised long enough: the error to assume until the
// clock's state is known.
const MaxErrorCeiling = 16 * time.Second

// State is what a host knows of its clock's accuracy.
type State struct {
	Synchronised bool          // to UTC, by an external source
	MaxError     time.Duration // the most the clock may be off
}
