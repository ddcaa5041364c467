package clock

import (
	"runtime"
	"testing"
)

// TestKernel: the kernel answers, with a maximum error within its bounds
// (0 to 16 s); an unsynchronised clock is what the kernel says it is, not
// an error.
func TestKernel(t *testing.T) {
	s, err := Kernel()
	if runtime.GOOS != "linux" {
		if err == nil {
			t.Fatal("a clock state off Linux")
		}
		return
	}
	if err != nil || s.MaxError < 0 || s.MaxError > MaxErrorCeiling {
		t.Fatalf("%+v, %v", s, err)
	}
	t.Logf("synchronised %v, maximum error %v", s.Synchronised, s.MaxError)
}
