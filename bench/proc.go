package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// usage is what a process used by the time it exited.
type usage struct {
	cpu time.Duration // user and system
	rss int64         // peak resident set, bytes
}

// proc is a child process and its peak resident set as last sampled.
//
// The peak is the kernel's VmHWM in /proc/PID/status, read every 20 ms
// while the process runs. The rusage a wait returns cannot serve: Go
// starts children with vfork, and at exec the kernel records the memory
// the child shared with its parent as the child's peak, so every child
// would report at least the bench's own resident set.
type proc struct {
	*testproc.Process
	hwm atomic.Int64 // bytes
}

// start runs bin with the bench's environment plus env.
func start(bin string, env []string, args ...string) (*proc, error) {
	tp, err := testproc.Launch(filepath.Base(bin)+" "+strings.Join(args, " "), env, bin, args...)
	if err != nil {
		return nil, err
	}
	p := &proc{Process: tp}
	go func() {
		status := "/proc/" + strconv.Itoa(p.Pid()) + "/status"
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, ok := vmHWM(status); ok {
				p.hwm.Store(kb << 10)
			}
			select {
			case <-p.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p, nil
}

// vmHWM reads the VmHWM line, in kB, of a /proc/PID/status file.
func vmHWM(status string) (int64, bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}

// startReady starts bin and waits up to 10 s until its output says ready;
// if it does not, the process is killed.
func startReady(bin, ready string, env []string, args ...string) (*proc, error) {
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
func stop(p *proc, timeout time.Duration) (usage, error) {
	if err := p.Terminate(timeout); err != nil {
		return usage{}, err
	}
	return exited(p, true)
}

// finish waits for a clean exit of a process that ends by itself.
func finish(p *proc, timeout time.Duration) (usage, error) {
	if err := p.Wait(timeout); err != nil {
		return usage{}, err
	}
	return exited(p, false)
}

// exited is what an exited process used, or why its exit was not clean.
// With term it was sent SIGTERM, which irtt's server answers by dying of
// it or by exiting 128 + 15.
func exited(p *proc, term bool) (usage, error) {
	st := p.State()
	ws := st.Sys().(syscall.WaitStatus)
	byTerm := term && (ws.Signaled() && ws.Signal() == syscall.SIGTERM || ws.ExitStatus() == 128+int(syscall.SIGTERM))
	if !st.Success() && !byTerm {
		return usage{}, fmt.Errorf("%s: %v\n%s", p.Name(), st, output(p))
	}
	return usage{cpu: st.UserTime() + st.SystemTime(), rss: p.hwm.Load()}, nil
}

// output is everything the process wrote.
func output(p *proc) string { return strings.Join(p.Lines(), "\n") }

// record returns p's first JSON log line with message msg.
func record(p *proc, msg string) (logRecord, error) {
	if recs := records(p, msg); len(recs) > 0 {
		return recs[0], nil
	}
	return nil, fmt.Errorf("%s did not log %q\n%s", p.Name(), msg, output(p))
}

// records returns every JSON log line of p with message msg.
func records(p *proc, msg string) []logRecord {
	var recs []logRecord
	for _, line := range p.Lines() {
		var rec logRecord
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			recs = append(recs, rec)
		}
	}
	return recs
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
