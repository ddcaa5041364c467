// Package fakeclock is a clock.Clock for tests: time moves only when a test
// advances it or a loop sleeps, and a sleep passes at once by moving the
// time to its end. A loop driven by it runs as fast as the machine allows
// and sees exactly the times the test scripted, however loaded the machine.
package fakeclock

import (
	"context"
	"sync"
	"time"

	"github.com/udpprobe/udpprobe/internal/clock"
)

// Clock is a fake clock, safe for concurrent use.
type Clock struct {
	mu    sync.Mutex
	now   time.Time
	hooks []hook
}

type hook struct {
	at time.Time
	f  func()
}

// New returns a clock that reads start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the time on by d and runs the hooks it reached, in the
// order they were added.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	kept := c.hooks[:0]
	for _, h := range c.hooks {
		if h.at.After(c.now) {
			kept = append(kept, h)
			continue
		}
		due = append(due, h.f)
	}
	c.hooks = kept
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// At runs f once the time reaches at (at the latest when a sleep or an
// Advance passes it), for example to cancel a loop's context.
func (c *Clock) At(at time.Time, f func()) {
	c.mu.Lock()
	c.hooks = append(c.hooks, hook{at: at, f: f})
	c.mu.Unlock()
	c.Advance(0)
}

// NewTimer returns a timer whose sleeps move the clock to their end.
func (c *Clock) NewTimer() clock.Timer { return timer{c} }

type timer struct{ c *Clock }

// Sleep moves the time on by d unless ctx is done; a hook run on the way may
// end ctx, which a sleep of the whole of d then reports as done too.
func (t timer) Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t.c.Advance(max(d, 0))
	return true
}
