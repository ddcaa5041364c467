// Package testproc runs the programs a test needs as child processes: the
// udpprobe binary, and the Prometheus and Alertmanager servers the live
// tests scrape and alert with. Every process is killed, and its log
// reader finished, when the test ends; the log is kept, and printed when
// the test failed, so a failure shows what the process said. The bench
// harness, which is not a test, uses the same processes through Launch.
// Background runs a component in-process the same way.
package testproc

import (
	"bufio"
	"context"
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

// RequirePython returns Debian's python3 if it can import module (a
// Debian package, pkg, brings it); otherwise the test is skipped with how
// to get it, or fails when CI=true.
func RequirePython(t testing.TB, module, pkg string) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if exec.Command(py, "-c", "import "+module).Run() == nil {
		return py
	}
	msg := fmt.Sprintf("needs %s for %s (apt-get install %s)", pkg, module, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB, network string) string {
	t.Helper()
	addr, err := Free(network)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Free is FreeAddr returning the error, for programs that are not tests.
func Free(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is a running child process and what it has written to stderr
// and stdout, line by line.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its log is read
	err  error         // what Wait returned, once done

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
	p, err := Launch(name, env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, strings.Join(p.Lines(), "\n"))
		}
	})
	return p
}

// Launch is StartAs for programs that are not tests: the caller must Kill
// the process or see it exit.
func Launch(name string, env []string, bin string, args ...string) (*Process, error) {
	p := &Process{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
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
		p.err = p.cmd.Wait()
	}()
	return p, nil
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
	line, err := p.AwaitLine(s, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// AwaitLine is Await returning the error, with its own timeout.
func (p *Process) AwaitLine(s string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		exited := false
		select {
		case <-p.done: // every line is in by now
			exited = true
		default:
		}
		for _, l := range p.Lines() {
			if strings.Contains(l, s) {
				return l, nil
			}
		}
		if exited {
			return "", fmt.Errorf("%s exited before logging %q: %v", p.name, s, p.err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s logged no line with %q in %v", p.name, s, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends SIGTERM and returns the exit code.
func (p *Process) Stop(t testing.TB) int {
	t.Helper()
	if err := p.Terminate(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Terminate sends SIGTERM and waits up to timeout for the process to exit.
func (p *Process) Terminate(timeout time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return p.Wait(timeout)
}

// Wait waits up to timeout for the process to exit, and kills it if it
// does not. How it exited is in State.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %v", p.name, timeout)
	}
}

// State is how the process exited, once it has: its status and what it used.
func (p *Process) State() *os.ProcessState { return p.cmd.ProcessState }

// Kill kills the process, if it still runs, and waits for its log.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed once the process has exited and its log is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Name is what the process goes by in messages.
func (p *Process) Name() string { return p.name }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Background runs a component's Run in a goroutine until the test ends,
// then cancels it and requires it to return nil.
func Background(t testing.TB, name string, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
}
