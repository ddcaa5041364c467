//go:build !linux

package socket

import "syscall"

// Elsewhere the kernel attaches nothing: the read time stands in for the
// receive timestamp and socket drops stay 0.
var OOBSize = 0

// Timestamps is true where the kernel can timestamp received datagrams.
const Timestamps = false

func EnableTimestamps(syscall.RawConn) error { return nil }

func EnableDrops(syscall.RawConn) error { return nil }

func EnableTraffic(syscall.RawConn, bool) error { return nil }

func EnableTrafficOf(syscall.RawConn) error { return nil }

func SetTrafficClass(syscall.RawConn, uint8) error { return nil }

func SetDontFragment(syscall.RawConn) error { return nil }

// TrafficClassControlSize is 0 where no control message sets the class.
var TrafficClassControlSize = 0

func TrafficClassControl(b []byte, _ bool, _ uint8) []byte { return b[:0] }

func HopLimits(syscall.RawConn) (v4, v6 uint8, err error) { return 0, 0, nil }

func SetReceiveBuffer(syscall.RawConn, int) (int, error) { return 0, nil }

func Parse([]byte) Control { return Control{} }
