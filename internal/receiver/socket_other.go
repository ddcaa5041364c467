//go:build !linux

package receiver

import "syscall"

// Elsewhere the kernel's drop counter is not available; socket drops stay 0.
var oobSize = 0

func controlSocket(_, _ string, _ syscall.RawConn) error { return nil }

func setReceiveBuffer(_ syscall.RawConn, _ int) (int, error) { return 0, nil }

func parseDrops([]byte) (uint32, bool) { return 0, false }
