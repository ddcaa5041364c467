//go:build !linux

package clock

import "errors"

// Kernel reads the clock's synchronisation state; only Linux tells it here.
func Kernel() (State, error) { return State{}, errors.ErrUnsupported }
