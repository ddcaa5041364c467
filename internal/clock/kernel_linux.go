package clock

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel reads the kernel's clock discipline (adjtimex, reading only, which
// needs no privilege): whether the clock is synchronised, by NTP or PTP
// through the kernel, and its maximum error. An unsynchronised clock's
// maximum error grows to the kernel's ceiling of 16 s.
func Kernel() (State, error) {
	var tx unix.Timex // Modes 0: read, change nothing
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return State{}, os.NewSyscallError("adjtimex", err)
	}
	return State{
		Synchronised: state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0,
		MaxError:     time.Duration(tx.Maxerror) * time.Microsecond,
	}, nil
}
