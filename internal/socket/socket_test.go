package socket

import (
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestKernelTimestamp: on Linux a datagram read from a socket with
// timestamps enabled carries the kernel's receive time, between the write
// and the read.
func TestKernelTimestamp(t *testing.T) {
	if !Timestamps {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but kernel timestamps are not supported on %s", runtime.GOOS)
		}
		t.Skipf("no kernel receive timestamps on %s", runtime.GOOS)
	}
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := EnableTimestamps(raw); err != nil {
		t.Fatal(err)
	}
	if err := EnableDrops(raw); err != nil {
		t.Fatal(err)
	}
	wc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	before := time.Now().UnixNano()
	if _, err := wc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 16), make([]byte, OOBSize)
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, oobn, _, _, err := rc.ReadMsgUDPAddrPort(buf, oob)
	after := time.Now().UnixNano()
	if err != nil {
		t.Fatal(err)
	}
	c := Parse(oob[:oobn])
	if !c.HasTime || c.Time < before || c.Time > after {
		t.Fatalf("control %+v, want a time in [%d, %d]", c, before, after)
	}
	if c.HasDrops {
		t.Fatalf("a drop count before any drop: %+v", c)
	}
}

// TestParseMalformed: truncated or lying control messages yield nothing
// and never panic.
func TestParseMalformed(t *testing.T) {
	for _, oob := range [][]byte{
		nil,
		{1, 2, 3},
		make([]byte, 64), // a zero length header
		{0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 35, 0, 0, 0}, // length beyond the buffer
	} {
		if c := Parse(oob); c != (Control{}) {
			t.Errorf("Parse(%x) = %+v", oob, c)
		}
	}
}
