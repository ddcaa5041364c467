package main

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "UDPPROBE_") || k == "GOMAXPROCS" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndExitCodes(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, exitUsage, "", "Usage: udpprobe <mode>"},
		{[]string{"bogus"}, exitUsage, "", `unknown mode "bogus"`},
		{[]string{"sender", "extra"}, exitUsage, "", "Usage:"},
		{[]string{"version"}, exitOK, "udpprobe, version", ""},
		{[]string{"help"}, exitOK, "UDPPROBE_LOSS_TIMEOUT", ""},
		{[]string{"-h"}, exitOK, "UDPPROBE_TARGETS", ""},
		{[]string{"sender"}, exitUsage, "", "UDPPROBE_TARGETS is required"},
	} {
		code, stdout, stderr := runArgs(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("udpprobe %v: exit %d, stdout %q, stderr %q; want exit %d with %q / %q",
				tc.args, code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
}

// TestBadConfigurationExits2: every kind of bad value makes a daemon exit
// 2, naming each variable at fault.
func TestBadConfigurationExits2(t *testing.T) {
	for _, tc := range []struct {
		mode string
		env  map[string]string
		want []string
	}{
		{"receiver", map[string]string{"UDPPROBE_LOSS_TIMOUT": "5s", "UDPPROBE_MAX_PEERS": "0"},
			[]string{"UDPPROBE_LOSS_TIMOUT is not a udpprobe setting", "UDPPROBE_MAX_PEERS=0: must be 1 to 2000"}},
		{"receiver", map[string]string{"UDPPROBE_LISTEN_ADDRESS": "", "UDPPROBE_WEB_LISTEN_ADDRESS": ""},
			[]string{`UDPPROBE_LISTEN_ADDRESS=""`, `UDPPROBE_WEB_LISTEN_ADDRESS=""`}},
		{"receiver", map[string]string{"UDPPROBE_MAX_PEERS": "010", "UDPPROBE_RECEIVE_BUFFER": "0x10"},
			[]string{`UDPPROBE_MAX_PEERS="010"`, `UDPPROBE_RECEIVE_BUFFER="0x10"`}},
		{"sender", map[string]string{"UDPPROBE_TARGETS": "127.0.0.1:6464", "UDPPROBE_RATE": "abc", "UDPPROBE_PAYLOAD_SIZE": "abc"},
			[]string{`UDPPROBE_RATE="abc"`, `UDPPROBE_PAYLOAD_SIZE="abc"`}},
		{"sender", map[string]string{"UDPPROBE_TARGETS": "127.0.0.1:6464", "UDPPROBE_WEB_CONFIG_FILE": "/nonexistent/web.yml"},
			[]string{`UDPPROBE_WEB_CONFIG_FILE="/nonexistent/web.yml"`}},
		{"sender", map[string]string{"UDPPROBE_TARGETS": "stamp://127.0.0.1:862"},
			[]string{`"stamp://127.0.0.1:862": a STAMP reflector is measured by its replies; set UDPPROBE_ROUND_TRIP=true`}},
		{"sender", map[string]string{"UDPPROBE_TARGETS": "stamp://127.0.0.1:862", "UDPPROBE_ROUND_TRIP": "true", "UDPPROBE_STAMP_HMAC_KEY_FILE": "/nonexistent/key"},
			[]string{`UDPPROBE_STAMP_HMAC_KEY_FILE: open /nonexistent/key`}},
		{"mesh", map[string]string{"UDPPROBE_TARGETS": "stamp://127.0.0.1:862", "UDPPROBE_NAME": "a"},
			[]string{`a mesh's members are udpprobe nodes`}},
		{"receiver", map[string]string{"UDPPROBE_STAMP_HMAC_KEY_FILE": "/nonexistent/key"},
			[]string{`UDPPROBE_STAMP_HMAC_KEY_FILE is set but UDPPROBE_STAMP_LISTEN_ADDRESS is not`}},
		{"receiver", map[string]string{"UDPPROBE_STAMP_LISTEN_ADDRESS": ":862", "UDPPROBE_STAMP_HMAC_KEY_FILE": "/nonexistent/key"},
			[]string{`UDPPROBE_STAMP_HMAC_KEY_FILE: open /nonexistent/key`}},
		{"receiver", map[string]string{"UDPPROBE_STAMP_LISTEN_ADDRESS": "nowhere"},
			[]string{`UDPPROBE_STAMP_LISTEN_ADDRESS="nowhere"`}},
	} {
		t.Run(strings.Join(tc.want, " "), func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			// The daemon and `udpprobe check` refuse the same way.
			for _, args := range [][]string{{tc.mode}, {"check", tc.mode}} {
				code, stdout, stderr := runArgs(t, args...)
				if code != exitUsage || stdout != "" {
					t.Fatalf("%v: exit %d, want %d; stdout %q, stderr %q", args, code, exitUsage, stdout, stderr)
				}
				for _, want := range tc.want {
					if !strings.Contains(stderr, want) {
						t.Errorf("%v: stderr %q lacks %q", args, stderr, want)
					}
				}
			}
		})
	}
}

func TestReadmeConfigurationTable(t *testing.T) {
	clearEnv(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, help, _ := runArgs(t, "help")
	table := help[strings.Index(help, "udpprobe sender\n"):]
	if !bytes.Contains(readme, []byte(table)) {
		t.Fatalf("README.md's configuration table differs from `udpprobe help`; paste this:\n%s", table)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricsAt scrapes the daemon whose web server listens at addr.
func metricsAt(t *testing.T, addr string) scrape.Samples {
	t.Helper()
	m, err := scrape.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDaemons builds the binary and runs a reflecting receiver and a
// round-trip sender as a user would: summary lines appear, the HTTP
// endpoints answer, replies come back, SIGTERM makes the sender say goodbye
// and both exit 0.
func TestDaemons(t *testing.T) {
	clearEnv(t)
	bin := testproc.Build(t, ".")
	udp, rweb, sweb := testproc.FreeAddr(t, "udp"), testproc.FreeAddr(t, "tcp"), testproc.FreeAddr(t, "tcp")
	rcv := testproc.Start(t, []string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + rweb,
		"UDPPROBE_SUMMARY_INTERVAL=1s", "UDPPROBE_LOSS_TIMEOUT=100ms", "UDPPROBE_LOG_FORMAT=json",
		"UDPPROBE_REFLECT=true"}, bin, "receiver")
	rcv.Await(t, `"msg":"receiving"`)
	snd := testproc.Start(t, []string{"UDPPROBE_TARGETS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + sweb,
		"UDPPROBE_RATE=200", "UDPPROBE_NAME=probe-1", "UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=100ms"}, bin, "sender")
	line := rcv.Await(t, `"msg":"summary","sender":"probe-1"`)
	if !strings.Contains(line, `"received":`) || !strings.Contains(line, `"loss_ratio":0`) {
		t.Errorf("summary line %s", line)
	}
	for _, url := range []string{"http://" + rweb + "/-/healthy", "http://" + rweb + "/-/ready", "http://" + rweb + "/",
		"http://" + sweb + "/-/ready"} {
		if code, _ := get(t, url); code != http.StatusOK {
			t.Errorf("GET %s: %d", url, code)
		}
	}
	sm, rm := metricsAt(t, sweb), metricsAt(t, rweb)
	// One receiving goroutine, one target: one processor each.
	if sm["go_sched_gomaxprocs_threads"] != 1 || rm["go_sched_gomaxprocs_threads"] != 1 {
		t.Errorf("GOMAXPROCS is not 1 in the receiver or the sender")
	}
	if replies, lost := sm[scrape.Series("udpprobe_sender_replies_received_total", "sender", "probe-1", "target", udp)],
		sm[scrape.Series("udpprobe_sender_roundtrip_packets_lost_total", "sender", "probe-1", "target", udp)]; replies == 0 || lost != 0 {
		t.Errorf("sender metrics show %v replies and %v round trips lost from %s, want some and none", replies, lost, udp)
	}
	// The healthcheck, as the container runs it: the same variables.
	t.Setenv("UDPPROBE_WEB_LISTEN_ADDRESS", rweb)
	if code, stdout, stderr := runArgs(t, "healthcheck", "receiver"); code != exitOK || !strings.Contains(stdout, "/-/ready: ready") {
		t.Errorf("healthcheck of a running receiver: exit %d, %q %q", code, stdout, stderr)
	}
	if code := snd.Stop(t); code != exitOK {
		t.Errorf("sender exit code %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := metricsAt(t, rweb)
		goodbyes, lost := m["udpprobe_receiver_goodbyes_total"],
			m[scrape.Series("udpprobe_receiver_packets_lost_total", "sender", "probe-1", "target", udp)]
		if goodbyes == 3 && lost == 0 {
			if !slices.ContainsFunc(slices.Collect(maps.Keys(m)), func(k string) bool {
				return strings.HasPrefix(k, "udpprobe_build_info{")
			}) {
				t.Error("the receiver exports no udpprobe_build_info")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver metrics after the goodbye: %v goodbyes, %v lost; want 3 and 0", goodbyes, lost)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := rcv.Stop(t); code != exitOK {
		t.Errorf("receiver exit code %d", code)
	}
	if code, _, stderr := runArgs(t, "healthcheck", "receiver"); code != exitFailure || !strings.Contains(stderr, "connection refused") {
		t.Errorf("healthcheck of a stopped receiver: exit %d, %q", code, stderr)
	}
}

// TestCheck: a valid configuration of each mode passes, naming the mode;
// the usage is enforced; nothing is bound or resolved.
func TestCheck(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"check"}, {"check", "relay"}, {"check", "mesh", "x"}} {
		if code, _, stderr := runArgs(t, args...); code != exitUsage || !strings.Contains(stderr, "udpprobe check receiver|sender|mesh") {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
	// A name that does not resolve is not the check's business: a member
	// may not exist yet.
	for mode, env := range map[string]map[string]string{
		"receiver": {"UDPPROBE_LISTEN_ADDRESS": "192.0.2.1:1"}, // not this host's: a check binds nothing
		"sender":   {"UDPPROBE_TARGETS": "udpprobe.invalid:6464"},
		"mesh":     {"UDPPROBE_TARGETS": "udpprobe.invalid:6464", "UDPPROBE_LISTEN_ADDRESS": "192.0.2.1:1"},
	} {
		clearEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		if code, stdout, stderr := runArgs(t, "check", mode); code != exitOK || stdout != "udpprobe "+mode+": configuration OK\n" || stderr != "" {
			t.Errorf("check %s: exit %d, stdout %q, stderr %q", mode, code, stdout, stderr)
		}
	}
}

func TestHealthcheckUsage(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"healthcheck"}, {"healthcheck", "relay"}, {"healthcheck", "sender", "x"}} {
		if code, _, stderr := runArgs(t, args...); code != exitUsage || !strings.Contains(stderr, "udpprobe healthcheck receiver|sender") {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
	// A sender's healthcheck reads the sender's variables, and reports them.
	if code, _, stderr := runArgs(t, "healthcheck", "sender"); code != exitUsage || !strings.Contains(stderr, "UDPPROBE_TARGETS is required") {
		t.Errorf("sender healthcheck without targets: exit %d, %q", code, stderr)
	}
}

func TestLocalAddress(t *testing.T) {
	for in, want := range map[string]string{
		":8464": "127.0.0.1:8464", "0.0.0.0:8464": "127.0.0.1:8464", "[::]:8465": "[::1]:8465",
		"10.0.0.5:8464": "10.0.0.5:8464", "[2001:db8::1]:8464": "[2001:db8::1]:8464", "localhost:1": "localhost:1",
	} {
		if got := localAddress(in); got != want {
			t.Errorf("localAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBindFailureExits1: a port in use is a runtime failure, not a usage error.
func TestBindFailureExits1(t *testing.T) {
	clearEnv(t)
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("UDPPROBE_LISTEN_ADDRESS", l.LocalAddr().String())
	t.Setenv("UDPPROBE_WEB_LISTEN_ADDRESS", testproc.FreeAddr(t, "tcp"))
	if code, _, stderr := runArgs(t, "receiver"); code != exitFailure || !strings.Contains(stderr, "address already in use") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestBuildsStampVersion: `make build` and the image set every field
// `udpprobe version` and udpprobe_build_info show, so neither says dev or
// leaves the build user and date empty.
func TestBuildsStampVersion(t *testing.T) {
	for _, f := range []string{"../../Makefile", "../../Dockerfile"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, field := range []string{"Version", "Revision", "BuildUser", "BuildDate"} {
			if !bytes.Contains(b, []byte("version."+field+"=")) && !bytes.Contains(b, []byte("$(VPKG)."+field+"=")) {
				t.Errorf("%s does not set version.%s", f, field)
			}
		}
	}
}
