package socket

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// listen opens a receiving socket on network's loopback address with
// timestamps and drop counts on, and a Reader of size over it.
func listen(t testing.TB, network, addr string, size, slot int) (*net.UDPConn, *Reader) {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(EnableTimestamps(raw), EnableDrops(raw)); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(c, size, slot)
	if err != nil {
		t.Fatal(err)
	}
	return c, r
}

func dial(t testing.TB, to net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readN reads until n datagrams have arrived, copying them out.
func readN(t testing.TB, r *Reader, n int) (got []Message, calls int) {
	t.Helper()
	r.SetDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		msgs, err := r.Read()
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		calls++
		for _, m := range msgs {
			m.Buf = bytes.Clone(m.Buf)
			got = append(got, m)
		}
	}
	return got, calls
}

// TestReaderBatches: datagrams from two sockets, on IPv4 and on a dual-stack
// socket, come back whole, in order, with their source addresses and kernel
// timestamps, several per call where the platform batches; a datagram longer
// than the slot is cut to it.
func TestReaderBatches(t *testing.T) {
	for _, tc := range []struct{ network, listen, dial string }{
		{"udp4", "127.0.0.1:0", "127.0.0.1"},
		{"udp", "[::]:0", "127.0.0.1"}, // IPv4 to a dual-stack socket: a mapped source
		{"udp6", "[::1]:0", "::1"},
	} {
		t.Run(tc.network+"_"+tc.dial, func(t *testing.T) {
			const n, slot = 40, 64
			c, r := listen(t, tc.network, tc.listen, 16, slot)
			if tc.network == "udp6" && !hasIPv6Loopback() {
				t.Skip("no ::1 on this host")
			}
			to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.dial), c.LocalAddr().(*net.UDPAddr).AddrPort().Port()))
			a, b := dial(t, to), dial(t, to)
			before := time.Now().UnixNano()
			var want [][]byte
			var from []netip.AddrPort
			for i := range n {
				w, d := a, []byte(fmt.Sprintf("a%03d", i))
				if i%3 == 0 {
					w, d = b, []byte(fmt.Sprintf("b%03d", i))
				}
				if i == n-1 {
					d = bytes.Repeat([]byte{'z'}, slot+10)
				}
				if _, err := w.Write(d); err != nil {
					t.Fatal(err)
				}
				want = append(want, d[:min(len(d), slot)])
				from = append(from, w.LocalAddr().(*net.UDPAddr).AddrPort())
			}
			got, calls := readN(t, r, n)
			after := time.Now().UnixNano()
			if len(got) != n {
				t.Fatalf("read %d datagrams, want %d", len(got), n)
			}
			for i, m := range got {
				if !bytes.Equal(m.Buf, want[i]) {
					t.Fatalf("datagram %d is %q, want %q", i, m.Buf, want[i])
				}
				if m.From.Port() != from[i].Port() || m.From.Addr().Unmap() != from[i].Addr().Unmap() {
					t.Fatalf("datagram %d from %v, want %v", i, m.From, from[i])
				}
				if Timestamps && (!m.Control.HasTime || m.Control.Time < before || m.Control.Time > after) {
					t.Fatalf("datagram %d control %+v, want a time in [%d, %d]", i, m.Control, before, after)
				}
			}
			if BatchIO && calls >= n {
				t.Errorf("%d calls for %d datagrams queued at once: not batched", calls, n)
			}
		})
	}
}

func hasIPv6Loopback() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestReaderDropCounts: each datagram carries the socket's drop count as it
// was when the datagram was queued, so a batch tells where drops happened.
func TestReaderDropCounts(t *testing.T) {
	if !Timestamps {
		t.Skip("no drop counts on this platform")
	}
	c, r := listen(t, "udp4", "127.0.0.1:0", 64, 128)
	if err := c.SetReadBuffer(1); err != nil { // the kernel's minimum: a few datagrams
		t.Fatal(err)
	}
	w := dial(t, c.LocalAddr())
	const n = 200
	for i := range n {
		if _, err := w.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte{0xff}); err != nil { // queued after every drop
		t.Fatal(err)
	}
	var got []Message
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) == 0 || got[len(got)-1].Buf[0] != 0xff {
		msgs, err := r.Read()
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range msgs {
			m.Buf = bytes.Clone(m.Buf)
			got = append(got, m)
		}
	}
	last := got[len(got)-1]
	got = got[:len(got)-1]
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("%d datagrams queued of %d, want the buffer to have overflowed", len(got), n)
	}
	if got[0].Control.HasDrops {
		t.Errorf("the first datagram reports drops: %+v", got[0].Control)
	}
	if dropped := n - len(got); !last.Control.HasDrops || int(last.Control.Drops) != dropped {
		t.Errorf("last datagram reports %+v, want %d drops (%d of %d queued)", last.Control, dropped, len(got), n)
	}
}

// TestReaderAllocatesNothing: a read of a batch allocates nothing.
func TestReaderAllocatesNothing(t *testing.T) {
	c, r := listen(t, "udp4", "127.0.0.1:0", 8, 128)
	assertReadAllocatesNothing(t, r, dial(t, c.LocalAddr()))
}

// assertReadAllocatesNothing writes a datagram with w and reads it with r,
// 200 times, and fails if that allocates.
func assertReadAllocatesNothing(t *testing.T, r *Reader, w *net.UDPConn) {
	t.Helper()
	r.SetDeadline(time.Now().Add(5 * time.Second))
	d := []byte("probe")
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := w.Write(d); err != nil {
			t.Fatal(err)
		}
		if msgs, err := r.Read(); err != nil || len(msgs) != 1 {
			t.Fatalf("read %d datagrams: %v", len(msgs), err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per read", allocs)
	}
}

// TestReaderDeadline: the socket's read deadline ends a Read as it ends a
// plain read, with a timeout error.
func TestReaderDeadline(t *testing.T) {
	c, r := listen(t, "udp4", "127.0.0.1:0", 8, 128)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := r.Read()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
}

// TestWriterBatches: datagrams written in batches arrive whole and in order.
func TestWriterBatches(t *testing.T) {
	c, r := listen(t, "udp4", "127.0.0.1:0", 64, 128)
	wc := dial(t, c.LocalAddr())
	w, err := NewWriter(wc, 16)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = []byte(fmt.Sprintf("d%02d", i))
	}
	for rest := bufs; len(rest) > 0; {
		sent, err := w.Write(rest, nil)
		if err != nil || sent != min(len(rest), 16) {
			t.Fatalf("wrote %d of %d: %v", sent, len(rest), err)
		}
		rest = rest[sent:]
	}
	got, _ := readN(t, r, n)
	for i, m := range got {
		if !bytes.Equal(m.Buf, bufs[i]) {
			t.Fatalf("datagram %d is %q, want %q", i, m.Buf, bufs[i])
		}
	}
}

// TestWriterReportsRefusal: after the ICMP port unreachable of a first send
// to a closed port, the next batch reports the refusal for its first
// datagram, which was not sent, and none after it was tried.
func TestWriterReportsRefusal(t *testing.T) {
	c, _ := listen(t, "udp4", "127.0.0.1:0", 1, 16)
	to := c.LocalAddr()
	c.Close() // nothing listens there now
	w, err := NewWriter(dial(t, to), 8)
	if err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		sent, err := w.Write(bufs, nil)
		if err == nil {
			time.Sleep(time.Millisecond) // the ICMP error has not come back yet
			continue
		}
		if sent >= len(bufs) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Write = %d, %v; want fewer than %d and connection refused", sent, err, len(bufs))
		}
		return
	}
	t.Fatal("no refusal reported within 5 s")
}

// unconnected is a socket bound to an ephemeral port of network's
// loopback, or of every address ("udp", dual-stack).
func unconnected(t testing.TB, network string) *net.UDPConn {
	t.Helper()
	var laddr *net.UDPAddr
	if network == "udp4" {
		laddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestWriterDestinations: one batch on one socket reaches each datagram's
// own destination, from an IPv4 socket and from a dual-stack one (IPv4
// v4-mapped); an IPv4 socket refuses an IPv6 destination as ErrFamily,
// having sent the datagrams before it.
func TestWriterDestinations(t *testing.T) {
	a, ra := listen(t, "udp4", "127.0.0.1:0", 8, 16)
	b, rb := listen(t, "udp4", "127.0.0.1:0", 8, 16)
	to := []netip.AddrPort{a.LocalAddr().(*net.UDPAddr).AddrPort(), b.LocalAddr().(*net.UDPAddr).AddrPort(),
		a.LocalAddr().(*net.UDPAddr).AddrPort(), b.LocalAddr().(*net.UDPAddr).AddrPort()}
	for _, network := range []string{"udp4", "udp"} {
		w, err := NewWriter(unconnected(t, network), 8)
		if err != nil {
			t.Fatal(err)
		}
		bufs := [][]byte{[]byte("a1"), []byte("b1"), []byte("a2"), []byte("b2")}
		if n, err := w.Write(bufs, to); n != 4 || err != nil {
			t.Fatalf("%s: wrote %d: %v", network, n, err)
		}
		for r, want := range map[*Reader][]string{ra: {"a1", "a2"}, rb: {"b1", "b2"}} {
			got, _ := readN(t, r, 2)
			if string(got[0].Buf) != want[0] || string(got[1].Buf) != want[1] {
				t.Errorf("%s: got %q and %q, want %q", network, got[0].Buf, got[1].Buf, want)
			}
		}
	}
	w, err := NewWriter(unconnected(t, "udp4"), 8)
	if err != nil {
		t.Fatal(err)
	}
	six := append(to[:1:1], netip.MustParseAddrPort("[::1]:9"), to[1])
	if n, err := w.Write([][]byte{[]byte("x"), []byte("y"), []byte("z")}, six); n != 1 || !errors.Is(err, ErrFamily) {
		t.Fatalf("IPv6 from an IPv4 socket: wrote %d, %v; want 1 and ErrFamily", n, err)
	}
}

// TestWriterAllocatesNothing: a batch write to destinations allocates
// nothing.
func TestWriterAllocatesNothing(t *testing.T) {
	c, r := listen(t, "udp4", "127.0.0.1:0", 64, 128)
	w, err := NewWriter(unconnected(t, "udp"), 8)
	if err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}
	here := c.LocalAddr().(*net.UDPAddr).AddrPort()
	to := []netip.AddrPort{here, here, here, here}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := w.Write(bufs, to); n != len(bufs) || err != nil {
			t.Fatalf("wrote %d: %v", n, err)
		}
		for got := 0; got < len(bufs); {
			msgs, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			got += len(msgs)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
}
