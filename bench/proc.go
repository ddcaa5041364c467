package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// usage is what a process used by the time it exited.
type usage struct {
	cpu time.Duration // user and system
	rss int64         // peak resident set, bytes
}

// start runs bin with the bench's environment plus env.
func start(bin string, env []string, args ...string) (*testproc.Process, error) {
	return testproc.Launch(filepath.Base(bin)+" "+strings.Join(args, " "), env, bin, args...)
}

// startReady starts bin and waits up to 10 s until its output says ready;
// if it does not, the process is killed.
func startReady(bin, ready string, env []string, args ...string) (*testproc.Process, error) {
	p, err := start(bin, env, args...)
	if err != nil {
		return nil, err
	}
	if _, err := p.AwaitLine(ready, 10*time.Second); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%w\n%s", err, output(p))
	}
	return p, nil
}

// stop sends SIGTERM and waits for a clean exit.
func stop(p *testproc.Process, timeout time.Duration) (usage, error) {
	if err := p.Terminate(timeout); err != nil {
		return usage{}, err
	}
	return exited(p, true)
}

// finish waits for a clean exit of a process that ends by itself.
func finish(p *testproc.Process, timeout time.Duration) (usage, error) {
	if err := p.Wait(timeout); err != nil {
		return usage{}, err
	}
	return exited(p, false)
}

// exited is what an exited process used, or why its exit was not clean.
// With term it was sent SIGTERM, which irtt's server answers by dying of
// it or by exiting 128 + 15.
func exited(p *testproc.Process, term bool) (usage, error) {
	st := p.State()
	ws := st.Sys().(syscall.WaitStatus)
	byTerm := term && (ws.Signaled() && ws.Signal() == syscall.SIGTERM || ws.ExitStatus() == 128+int(syscall.SIGTERM))
	if !st.Success() && !byTerm {
		return usage{}, fmt.Errorf("%s: %v\n%s", p.Name(), st, output(p))
	}
	ru := st.SysUsage().(*syscall.Rusage)
	return usage{cpu: st.UserTime() + st.SystemTime(), rss: ru.Maxrss << 10}, nil
}

// output is everything the process wrote.
func output(p *testproc.Process) string { return strings.Join(p.Lines(), "\n") }

// record returns p's JSON log line with message msg.
func record(p *testproc.Process, msg string) (logRecord, error) {
	for _, line := range p.Lines() {
		var rec logRecord
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("%s did not log %q\n%s", p.Name(), msg, output(p))
}

// logRecord is one line of udpprobe's JSON log.
type logRecord map[string]any

// uint returns a numeric field.
func (r logRecord) uint(key string) (uint64, error) {
	v, ok := r[key].(float64)
	if !ok || v < 0 {
		return 0, fmt.Errorf("log line %v has no %s", r, key)
	}
	return uint64(v), nil
}

// time is when the line was logged (zap's ISO 8601, to the millisecond).
func (r logRecord) time() (time.Time, error) {
	ts, _ := r["ts"].(string)
	return time.Parse("2006-01-02T15:04:05.000Z0700", ts)
}

// free returns a loopback address whose port was free a moment ago.
func free(network string) string {
	addr, err := testproc.Free(network)
	if err != nil {
		fatalf("%v", err)
	}
	return addr
}
