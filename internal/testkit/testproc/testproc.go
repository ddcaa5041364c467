// Package testproc runs the programs a test needs as child processes: the
// udpprobe binary, and the Prometheus and Alertmanager servers the live
// tests scrape and alert with. Every process is killed, and its log
// reader finished, when the test ends; the log is kept, and printed when
// the test failed, so a failure shows what the process said.
package testproc

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the package at pkg (a path or an import path) into a
// temporary directory and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	name := pkg
	if strings.HasPrefix(pkg, ".") { // a directory: name the binary after it
		abs, err := filepath.Abs(pkg)
		if err != nil {
			t.Fatal(err)
		}
		name = abs
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(name))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// Require returns the program named by the environment variable env, or
// else the first of names found on PATH. Without one the test is skipped
// with how to get it, and fails instead when CI=true: CI must never skip
// silently.
func Require(t testing.TB, env, how string, names ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("needs %s (set %s or put it on PATH): %s", strings.Join(names, " or "), env, how)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Process is a running child process and what it has written to stderr
// (and, for servers that log there, stdout).
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its log is read

	mu    sync.Mutex
	lines []string
}

// Start runs bin with args and the test's environment plus env. The process
// is killed when the test ends.
func Start(t testing.TB, env []string, bin string, args ...string) *Process {
	t.Helper()
	return StartAs(t, filepath.Base(bin), env, bin, args...)
}

// StartAs is Start with the name the process goes by in failure messages.
func StartAs(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, strings.Join(p.Lines(), "\n"))
		}
	})
	return p
}

// Lines returns what the process has logged so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Await returns the first log line containing s, waiting up to 10 seconds.
func (p *Process) Await(t testing.TB, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		exited := false
		select {
		case <-p.done: // every line is in by now
			exited = true
		default:
		}
		for _, l := range p.Lines() {
			if strings.Contains(l, s) {
				return l
			}
		}
		if exited {
			t.Fatalf("%s exited before logging %q", p.name, s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no line with %q", p.name, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends SIGTERM and returns the exit code.
func (p *Process) Stop(t testing.TB) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGTERM", p.name)
	}
	return p.cmd.ProcessState.ExitCode()
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }
