package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// clearEnv unsets every UDPPROBE_* variable for the test.
func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, Prefix+"_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func setEnv(t *testing.T, env map[string]string) {
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestSenderDefaults(t *testing.T) {
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "127.0.0.1:6464,[::1]:6464", "UDPPROBE_NAME": "probe-1"})
	c, err := LoadSender()
	if err != nil {
		t.Fatal(err)
	}
	if c.WebListenAddress != ":8465" || c.Rate != 100 || len(c.Targets) != 2 ||
		c.PayloadSize != 0 || c.ResolveInterval != 30*time.Second || c.RoundTrip || c.LossTimeout != 3*time.Second ||
		c.LogLevel != "info" || c.LogFormat != "console" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestSenderNameDefaultsToHostname(t *testing.T) {
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "localhost:6464"})
	host, _ := os.Hostname()
	c, err := LoadSender()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != host {
		t.Fatalf("name %q, want host name %q", c.Name, host)
	}
}

// TestDelayMaxError: the bound is a duration, 100 ms by default, or off,
// which the receiver takes as 0: every delay that is not negative counts.
func TestDelayMaxError(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want time.Duration
	}{{"", 100 * time.Millisecond}, {"off", 0}, {"250us", 250 * time.Microsecond}} {
		env := map[string]string{}
		if tc.env != "" {
			env["UDPPROBE_ONE_WAY_DELAY_MAX_ERROR"] = tc.env
		}
		setEnv(t, env)
		c, err := LoadReceiver()
		if err != nil {
			t.Fatalf("%q: %v", tc.env, err)
		}
		if got, err := c.DelayMaxError(); got != tc.want || err != nil {
			t.Errorf("%q: bound %v (%v), want %v", tc.env, got, err, tc.want)
		}
	}
}

func TestReceiverDefaults(t *testing.T) {
	setEnv(t, nil)
	c, err := LoadReceiver()
	if err != nil {
		t.Fatal(err)
	}
	want := Receiver{
		WebListenAddress: ":8464", ListenAddress: ":6464", LossTimeout: 3 * time.Second,
		SummaryInterval: 10 * time.Second, MaxPeers: 100, PeerExpiry: time.Hour, ReceiveBuffer: 4 << 20,
		ReflectRate: 1000, ReflectBudget: 10000, ReflectBudgetBytes: 16 << 20,
		PeerDetail: PeerDetail{HopCount: true, DepthMetrics: true, OneWayDelayMaxError: "100ms"},
		Common:     Common{ClassicHistograms: true, Logging: Logging{LogLevel: "info", LogFormat: "console"}},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", *c, want)
	}
}

// TestAuthKeys: a key from UDPPROBE_HMAC_KEY or from a file, or two during
// a rotation, in order (the first signs); the sender's smallest datagram
// makes room for the tag.
func TestAuthKeys(t *testing.T) {
	const k1, k2 = "0123456789abcdef0123456789abcdef", "fedcba9876543210"
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("\n  "+k1+"  \n\n"+k2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"UDPPROBE_HMAC_KEY": k1}, []string{k1}},
		{map[string]string{"UDPPROBE_HMAC_KEY": k1 + ", " + k2}, []string{k1, k2}},
		{map[string]string{"UDPPROBE_HMAC_KEY_FILE": file}, []string{k1, k2}},
		{nil, nil},
	} {
		setEnv(t, tc.env)
		r, err := LoadReceiver()
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("UDPPROBE_TARGETS", "a:1")
		t.Setenv("UDPPROBE_NAME", "abcd")
		s, err := LoadSender()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range r.Keys {
			got = append(got, string(k))
		}
		if !slices.Equal(got, tc.want) || !reflect.DeepEqual(s.Keys, r.Keys) {
			t.Errorf("%v: receiver keys %q, sender keys %q, want %q", tc.env, got, s.Keys, tc.want)
		}
	}
}

func TestBadAuth(t *testing.T) {
	const short = "tooshort-secret"
	dir := t.TempDir()
	three := filepath.Join(dir, "three")
	os.WriteFile(three, []byte("0123456789abcdef\n0123456789abcdeg\n0123456789abcdeh\n"), 0o600)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"both", map[string]string{"UDPPROBE_HMAC_KEY": "0123456789abcdef", "UDPPROBE_HMAC_KEY_FILE": three},
			[]string{"UDPPROBE_HMAC_KEY and UDPPROBE_HMAC_KEY_FILE are both set"}},
		{"short", map[string]string{"UDPPROBE_HMAC_KEY": short},
			[]string{"UDPPROBE_HMAC_KEY: key 1 is 15 bytes: want 16 to 256"}},
		{"short second", map[string]string{"UDPPROBE_HMAC_KEY": "0123456789abcdef," + short},
			[]string{"UDPPROBE_HMAC_KEY: key 2 is 15 bytes"}},
		{"three", map[string]string{"UDPPROBE_HMAC_KEY_FILE": three},
			[]string{"UDPPROBE_HMAC_KEY_FILE " + three + ": 3 keys: want 1, or 2 during a rotation"}},
		{"missing file", map[string]string{"UDPPROBE_HMAC_KEY_FILE": filepath.Join(dir, "none")},
			[]string{"UDPPROBE_HMAC_KEY_FILE: open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			_, err := LoadReceiver()
			assertErr(t, err, tc.want)
			if err != nil && strings.Contains(err.Error(), short) {
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_NAME": "abcd",
		"UDPPROBE_HMAC_KEY": "0123456789abcdef", "UDPPROBE_PAYLOAD_SIZE": "113"})
	_, err := LoadSender()
	assertErr(t, err, []string{"UDPPROBE_PAYLOAD_SIZE=113: must be 0 or 114 (91 + name length + longest target's length + 16 for the authentication tag) to 65507"})
}

func TestBadSender(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // every fragment must appear in the error
	}{
		{"no targets", nil, []string{"UDPPROBE_TARGETS is required"}},
		{"no flow", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_FLOWS": "0"}, []string{"UDPPROBE_FLOWS=0: must be 1 to 64"}},
		{"too many flows", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_FLOWS": "65"}, []string{"UDPPROBE_FLOWS=65: must be 1 to 64"}},
		{"unknown family", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_IP_FAMILY": "inet6"},
			[]string{`UDPPROBE_IP_FAMILY="inet6": must be any, ipv4 or ipv6`}},
		{"address of another family", map[string]string{"UDPPROBE_TARGETS": "a:1,[fd00::1]:6464,stamp://10.0.0.1:862",
			"UDPPROBE_IP_FAMILY": "ipv4", "UDPPROBE_ROUND_TRIP": "true"},
			[]string{`UDPPROBE_TARGETS lists "[fd00::1]:6464", which UDPPROBE_IP_FAMILY=ipv4 leaves out`}},
		{"STAMP address of another family", map[string]string{"UDPPROBE_TARGETS": "stamp://10.0.0.1:862",
			"UDPPROBE_IP_FAMILY": "ipv6", "UDPPROBE_ROUND_TRIP": "true"},
			[]string{`UDPPROBE_TARGETS lists "stamp://10.0.0.1:862", which UDPPROBE_IP_FAMILY=ipv6 leaves out`}},
		{"target without port", map[string]string{"UDPPROBE_TARGETS": "localhost"},
			[]string{`UDPPROBE_TARGETS entry "localhost": must be host:port`}},
		{"target port zero", map[string]string{"UDPPROBE_TARGETS": "localhost:0"},
			[]string{"port from 1 to 65535"}},
		{"duplicate target", map[string]string{"UDPPROBE_TARGETS": "a:1,a:1"}, []string{`lists "a:1" twice`}},
		{"rate zero", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RATE": "0"},
			[]string{"UDPPROBE_RATE=0: must be 0.1 to 1000000"}},
		{"rate NaN", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RATE": "NaN"},
			[]string{"UDPPROBE_RATE=NaN"}},
		{"rate not a number", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RATE": "fast"},
			[]string{`UDPPROBE_RATE="fast": not a valid number`}},
		{"payload too small for name", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_NAME": "abcd",
			"UDPPROBE_PAYLOAD_SIZE": "97"}, []string{"UDPPROBE_PAYLOAD_SIZE=97: must be 0 or 98 (91 + name length + longest target's length) to 65507"}},
		{"payload too small for the longest target", map[string]string{"UDPPROBE_TARGETS": "a:1,bb:22",
			"UDPPROBE_NAME": "abcd", "UDPPROBE_PAYLOAD_SIZE": "99"}, []string{"UDPPROBE_PAYLOAD_SIZE=99: must be 0 or 100"}},
		{"payload ignores file entries", map[string]string{"UDPPROBE_TARGETS": "a:1,file:/a/very/long/path/to/sd.json",
			"UDPPROBE_NAME": "abcd", "UDPPROBE_PAYLOAD_SIZE": "97"}, []string{"UDPPROBE_PAYLOAD_SIZE=97: must be 0 or 98"}},
		{"file entry without a path", map[string]string{"UDPPROBE_TARGETS": "file:"},
			[]string{`UDPPROBE_TARGETS entry "file:": must be host:port`}},
		{"resolve interval too short", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RESOLVE_INTERVAL": "100ms"},
			[]string{"UDPPROBE_RESOLVE_INTERVAL=100ms: must be 1s to 1h"}},
		{"target not fit for a label", map[string]string{"UDPPROBE_TARGETS": "a b:1"},
			[]string{`UDPPROBE_TARGETS entry "a b:1": must be at most 255 characters`}},
		{"loss timeout too long", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_LOSS_TIMEOUT": "1h"},
			[]string{"UDPPROBE_LOSS_TIMEOUT=1h0m0s: must be 10ms to 10m0s"}},
		{"payload too large", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_PAYLOAD_SIZE": "65508"},
			[]string{"UDPPROBE_PAYLOAD_SIZE=65508"}},
		{"bad name", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_NAME": "my probe"},
			[]string{`UDPPROBE_NAME="my probe": must be 1 to 64 characters`}},
		{"bad log level", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_LOG_LEVEL": "loud"},
			[]string{`UDPPROBE_LOG_LEVEL="loud"`}},
		{"typo", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RAET": "5"},
			[]string{"UDPPROBE_RAET is not a udpprobe setting"}},
		{"receiver setting", map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_REFLECT": "true"},
			[]string{"UDPPROBE_REFLECT is a receiver setting; the sender does not read it"}},
		{"every problem at once", map[string]string{"UDPPROBE_RATE": "-1", "UDPPROBE_LOG_FORMAT": "xml"},
			[]string{"UDPPROBE_TARGETS is required", "UDPPROBE_RATE=-1", `UDPPROBE_LOG_FORMAT="xml"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			_, err := LoadSender()
			assertErr(t, err, tc.want)
		})
	}
}

// TestMeshFlows: a mesh node reads UDPPROBE_FLOWS and UDPPROBE_IP_FAMILY
// as a sender does.
func TestMeshFlows(t *testing.T) {
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "mesh:6464", "UDPPROBE_NAME": "n1"})
	c, err := LoadMesh()
	if err != nil || c.Flows != 1 {
		t.Fatalf("default: %d flows, %v", c.Flows, err)
	}
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "mesh:6464", "UDPPROBE_NAME": "n1", "UDPPROBE_FLOWS": "8"})
	if c, err = LoadMesh(); err != nil || c.Flows != 8 {
		t.Fatalf("UDPPROBE_FLOWS=8: %d flows, %v", c.Flows, err)
	}
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "mesh:6464", "UDPPROBE_NAME": "n1", "UDPPROBE_FLOWS": "65"})
	_, err = LoadMesh()
	assertErr(t, err, []string{"UDPPROBE_FLOWS=65: must be 1 to 64"})
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "mesh:6464", "UDPPROBE_NAME": "n1", "UDPPROBE_IP_FAMILY": "ipv6"})
	if c, err = LoadMesh(); err != nil || c.Family() != "ipv6" {
		t.Fatalf("UDPPROBE_IP_FAMILY=ipv6: %q, %v", c.Family(), err)
	}
}

func TestBadReceiver(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"loss timeout too short", map[string]string{"UDPPROBE_LOSS_TIMEOUT": "1ms"},
			[]string{"UDPPROBE_LOSS_TIMEOUT=1ms: must be 10ms to 10m0s"}},
		{"loss timeout not a duration", map[string]string{"UDPPROBE_LOSS_TIMEOUT": "3"},
			[]string{`UDPPROBE_LOSS_TIMEOUT="3": not a valid duration such as 3s or 500ms`}},
		{"summary too frequent", map[string]string{"UDPPROBE_SUMMARY_INTERVAL": "100ms"},
			[]string{"UDPPROBE_SUMMARY_INTERVAL=100ms: must be 1s to 24h0m0s"}},
		{"reflect budget zero", map[string]string{"UDPPROBE_REFLECT_BUDGET": "0"},
			[]string{"UDPPROBE_REFLECT_BUDGET=0: must be 1 to 10000000 replies per second"}},
		{"reflect byte budget too small", map[string]string{"UDPPROBE_REFLECT_BUDGET_BYTES": "1000"},
			[]string{"UDPPROBE_REFLECT_BUDGET_BYTES=1000: must be 65536 to 17179869184 bytes per second"}},
		{"reflect rate zero", map[string]string{"UDPPROBE_REFLECT_RATE": "0"},
			[]string{"UDPPROBE_REFLECT_RATE=0: must be 1 to 1000000"}},
		{"sender setting", map[string]string{"UDPPROBE_ROUND_TRIP": "true"},
			[]string{"UDPPROBE_ROUND_TRIP is a sender setting; the receiver does not read it"}},
		{"max peers zero", map[string]string{"UDPPROBE_MAX_PEERS": "0"}, []string{"UDPPROBE_MAX_PEERS=0: must be 1 to 2000"}},
		{"delay bound not a duration", map[string]string{"UDPPROBE_ONE_WAY_DELAY_MAX_ERROR": "none"},
			[]string{`UDPPROBE_ONE_WAY_DELAY_MAX_ERROR="none": must be off or a duration from 1us to 1m`}},
		{"delay bound too loose", map[string]string{"UDPPROBE_ONE_WAY_DELAY_MAX_ERROR": "2m"},
			[]string{`UDPPROBE_ONE_WAY_DELAY_MAX_ERROR="2m": must be off or a duration from 1us to 1m`}},
		{"expiry within loss timeout", map[string]string{"UDPPROBE_PEER_EXPIRY": "2s"},
			[]string{"UDPPROBE_PEER_EXPIRY=2s: must be longer than UDPPROBE_LOSS_TIMEOUT (3s)"}},
		{"negative buffer", map[string]string{"UDPPROBE_RECEIVE_BUFFER": "-1"}, []string{"UDPPROBE_RECEIVE_BUFFER=-1"}},
		{"bad listen address", map[string]string{"UDPPROBE_LISTEN_ADDRESS": "nowhere"},
			[]string{`UDPPROBE_LISTEN_ADDRESS="nowhere": must be [host]:port`}},
		{"bad web address", map[string]string{"UDPPROBE_WEB_LISTEN_ADDRESS": ":99999"},
			[]string{`UDPPROBE_WEB_LISTEN_ADDRESS=":99999"`}},
		{"sender setting", map[string]string{"UDPPROBE_TARGETS": "a:1"},
			[]string{"UDPPROBE_TARGETS is a sender setting; the receiver does not read it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			_, err := LoadReceiver()
			assertErr(t, err, tc.want)
		})
	}
}

func assertErr(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b strings.Builder
	if err := Usage(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, mode := range []string{ModeSender, ModeReceiver} {
		for _, k := range keys(mode) {
			if !strings.Contains(out, k) {
				t.Errorf("usage lacks %s", k)
			}
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "UDPPROBE_LOSS_TIMEOUT" && f[1] != "3s" {
			t.Errorf("loss timeout default shown as %q", f[1])
		}
	}
	if !strings.Contains(out, "udpprobe receiver") || !strings.Contains(out, "RFC 7680") {
		t.Errorf("usage lacks titles or descriptions:\n%s", out)
	}
}

// TestValuesParseStrictly: whole numbers are decimal, never octal or hex;
// empty listen addresses, which would bind a random port everywhere, are
// refused; and every value that does not parse is named, not only the
// first.
func TestValuesParseStrictly(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"octal", map[string]string{"UDPPROBE_MAX_PEERS": "010"}, []string{`UDPPROBE_MAX_PEERS="010": not a valid whole number`}},
		{"hex", map[string]string{"UDPPROBE_RECEIVE_BUFFER": "0x10"}, []string{`UDPPROBE_RECEIVE_BUFFER="0x10": not a valid whole number`}},
		{"too large", map[string]string{"UDPPROBE_MAX_PEERS": "99999999999999999999"}, []string{`UDPPROBE_MAX_PEERS="99999999999999999999": not a valid whole number`}},
		{"hex float", map[string]string{"UDPPROBE_REFLECT_RATE": "0x1p10"}, []string{`UDPPROBE_REFLECT_RATE="0x1p10": not a valid number`}},
		{"empty listen address", map[string]string{"UDPPROBE_LISTEN_ADDRESS": ""}, []string{`UDPPROBE_LISTEN_ADDRESS="": must be [host]:port`}},
		{"empty web address", map[string]string{"UDPPROBE_WEB_LISTEN_ADDRESS": ""}, []string{`UDPPROBE_WEB_LISTEN_ADDRESS="": must be [host]:port`}},
		{"no port", map[string]string{"UDPPROBE_LISTEN_ADDRESS": "127.0.0.1:"}, []string{`UDPPROBE_LISTEN_ADDRESS="127.0.0.1:": must be [host]:port`}},
		{"every bad value", map[string]string{"UDPPROBE_MAX_PEERS": "abc", "UDPPROBE_LOSS_TIMEOUT": "abc", "UDPPROBE_REFLECT": "abc"},
			[]string{`UDPPROBE_MAX_PEERS="abc"`, `UDPPROBE_LOSS_TIMEOUT="abc"`, `UDPPROBE_REFLECT="abc"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			_, err := LoadReceiver()
			assertErr(t, err, tc.want)
		})
	}
	setEnv(t, map[string]string{"UDPPROBE_TARGETS": "a:1", "UDPPROBE_RATE": "abc", "UDPPROBE_PAYLOAD_SIZE": "abc"})
	_, err := LoadSender()
	assertErr(t, err, []string{`UDPPROBE_RATE="abc"`, `UDPPROBE_PAYLOAD_SIZE="abc"`})
}
