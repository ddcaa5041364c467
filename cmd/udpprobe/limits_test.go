package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestHTTPHeaderLimits: 300 clients each hold a connection with a 1 MiB
// header they never finish, as a slow attacker would. The daemon's
// resident memory stays under 128 MiB, a scrape meanwhile answers, and a
// finished 1 MiB header is refused with 431.
func TestHTTPHeaderLimits(t *testing.T) {
	bin := testproc.Build(t, ".")
	web := testproc.FreeAddr(t, "tcp")
	rcv := testproc.Start(t, []string{"UDPPROBE_LISTEN_ADDRESS=" + testproc.FreeAddr(t, "udp"),
		"UDPPROBE_WEB_LISTEN_ADDRESS=" + web, "UDPPROBE_LOG_FORMAT=json"}, bin, "receiver")
	rcv.Await(t, `"msg":"receiving"`)

	header := "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 1<<20)
	var wg sync.WaitGroup
	conns := make(chan net.Conn, 300)
	for range 300 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", web, 5*time.Second)
			if err != nil {
				return // the backlog is full: refused, which is fine
			}
			conns <- c
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(header)) // unfinished: no blank line; the server may cut it short
		})
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()

	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Get("http://" + web + "/metrics")
	if err != nil {
		t.Fatalf("a scrape beside 300 held connections: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a scrape beside 300 held connections: %s", resp.Status)
	}
	if rss := vmRSS(t, rcv.Pid()); rss > 128<<20 {
		t.Errorf("resident memory %d MiB with 300 held 1 MiB headers, want under 128 MiB", rss>>20)
	} else {
		t.Logf("resident memory with 300 held 1 MiB headers: %.1f MiB", float64(rss)/(1<<20))
	}

	c, err := net.Dial("tcp", web)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write([]byte(header + "\r\n\r\n"))
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(status, " 431 ") {
		t.Fatalf("a finished 1 MiB header: %q, %v; want 431", status, err)
	}
}

// vmRSS is a process's resident set, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
