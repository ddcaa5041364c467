package socket

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pollerEntries counts the entries of this process's epoll instances (the
// Go runtime's poller among them) that watch the file with inode ino.
func pollerEntries(t *testing.T, ino uint64) int {
	t.Helper()
	fds, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	polls, n := 0, 0
	want := fmt.Sprintf("ino:%x ", ino)
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err != nil || l != "anon_inode:[eventpoll]" {
			continue
		}
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", filepath.Base(fd)))
		if err != nil {
			continue // closed since the listing
		}
		polls++
		for s := bufio.NewScanner(f); s.Scan(); {
			if strings.HasPrefix(s.Text(), "tfd:") && strings.Contains(s.Text()+" ", want) {
				n++
			}
		}
		f.Close()
	}
	if polls == 0 {
		t.Fatal("no epoll instance in this process: the runtime's poller was not found")
	}
	return n
}

// unpolled returns a Reader taken out of the poller, the socket's inode
// and a connected socket that sends to it.
func unpolled(t *testing.T, size int) (*Reader, uint64, *net.UDPConn) {
	t.Helper()
	c, r := listen(t, "udp4", "127.0.0.1:0", size, 128)
	w := dial(t, c.LocalAddr())
	if err := r.Unpoll(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(r.fd, &st); err != nil {
		t.Fatal(err)
	}
	return r, st.Ino, w
}

// TestUnpollLeavesThePoller: the runtime's poller watches a new socket and
// stops when the Reader unpolls it; the connection is closed, the socket
// is not.
func TestUnpollLeavesThePoller(t *testing.T) {
	c, r := listen(t, "udp4", "127.0.0.1:0", 8, 128)
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	raw.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &st) })
	if err != nil {
		t.Fatal(err)
	}
	if n := pollerEntries(t, st.Ino); n != 1 {
		t.Fatalf("before Unpoll: %d poller entries watch the socket, want 1", n)
	}
	if err := r.Unpoll(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := pollerEntries(t, st.Ino); n != 0 {
		t.Fatalf("after Unpoll: %d poller entries watch the socket, want 0", n)
	}
	if err := c.SetReadDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the connection after Unpoll: %v, want net.ErrClosed", err)
	}
	w := dial(t, c.LocalAddr())
	if _, err := w.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	if got, _ := readN(t, r, 1); string(got[0].Buf) != "still open" || !got[0].Control.HasTime {
		t.Fatalf("read %q (timestamped %v) after Unpoll", got[0].Buf, got[0].Control.HasTime)
	}
}

// TestUnpolledReads: out of the poller, a Read takes what queued in one
// call, waits for a datagram when there is none, and allocates nothing.
func TestUnpolledReads(t *testing.T) {
	r, _, w := unpolled(t, 16)
	for i := range 10 {
		if _, err := fmt.Fprintf(w, "datagram %d", i); err != nil {
			t.Fatal(err)
		}
	}
	got, calls := readN(t, r, 10)
	for i, m := range got {
		if want := fmt.Sprintf("datagram %d", i); string(m.Buf) != want {
			t.Fatalf("datagram %d is %q, want %q", i, m.Buf, want)
		}
	}
	if calls != 1 {
		t.Fatalf("10 queued datagrams took %d reads, want 1", calls)
	}

	done := make(chan error, 1)
	r.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, err := r.Read() // waits in ppoll until the write below
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if _, err := w.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting Read did not return when a datagram arrived")
	}
	assertReadAllocatesNothing(t, r, w)
}

// TestUnpolledDeadline: out of the poller, the deadline ends a waiting Read
// with a timeout, and a zero deadline removes it.
func TestUnpolledDeadline(t *testing.T) {
	r, _, w := unpolled(t, 8)
	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := r.Read()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	r.SetDeadline(time.Time{})
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if msgs, err := r.Read(); err != nil || len(msgs) != 1 {
		t.Fatalf("without a deadline: read %d datagrams: %v", len(msgs), err)
	}
}

// TestUnpolledClose: Close ends a Read waiting in ppoll with net.ErrClosed,
// closes the socket, and later Reads and Closes fail the same way.
func TestUnpolledClose(t *testing.T) {
	r, ino, _ := unpolled(t, 8)
	fd := r.fd
	done := make(chan error, 1)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the waiting Read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil && st.Ino == ino {
		t.Fatalf("descriptor %d still holds the socket after Close", fd)
	}
	if _, err := r.Read(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want net.ErrClosed", err)
	}
}
