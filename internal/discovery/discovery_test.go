package discovery

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// resolver answers from a table that tests change; a missing name fails.
type resolver map[string][]string

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	as, ok := r[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	var out []netip.Addr
	for _, a := range as {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func labels(ts []Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Label+"="+t.Addr.String())
	}
	return out
}

func expect(t *testing.T, what string, got []Target, want ...string) {
	t.Helper()
	if g := labels(got); !slices.Equal(g, want) {
		t.Fatalf("%s: %q, want %q", what, g, want)
	}
}

// TestNames: an address is its own label; a name with one address keeps
// the entry as its label; a name with several gives one target per
// address, labelled by it (sorted, repeated and v4-mapped ones once); a
// name that stops resolving keeps its last addresses, counted as a
// failure; a label given twice is one target; this host's own addresses
// are skipped.
func TestNames(t *testing.T) {
	r := resolver{"one": {"10.0.0.1"}, "many": {"10.0.0.3", "::ffff:10.0.0.2", "10.0.0.3", "fd00::1"}}
	var failed []string
	d, err := New(Options{
		Entries:  []string{"10.0.0.9:6464", "one:6464", "many:6464", "[fd00::2]:6464", "one:6464", "10.0.0.1:7"},
		Interval: time.Minute, Resolver: r, Failed: func(s string) { failed = append(failed, s) },
		Self: func(a netip.AddrPort) bool { return a == netip.MustParseAddrPort("10.0.0.1:7") },
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.9:6464=10.0.0.9:6464", "one:6464=10.0.0.1:6464",
		"10.0.0.2:6464=10.0.0.2:6464", "10.0.0.3:6464=10.0.0.3:6464", "[fd00::1]:6464=[fd00::1]:6464",
		"[fd00::2]:6464=[fd00::2]:6464"}
	ts, err := d.Resolve(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "resolved", ts, want...)
	delete(r, "one")
	r["many"] = []string{"10.0.0.4"}
	ts, err = d.Resolve(context.Background(), time.Now())
	if err == nil || len(failed) != 2 || failed[0] != "dns" {
		t.Fatalf("one gone: error %v, failures %v; want an error and two dns failures (it is listed twice)", err, failed)
	}
	expect(t, "one gone, many down to one address", ts,
		"10.0.0.9:6464=10.0.0.9:6464", "one:6464=10.0.0.1:6464", "many:6464=10.0.0.4:6464", "[fd00::2]:6464=[fd00::2]:6464")
	expect(t, "without resolving", d.Targets(context.Background(), time.Now(), false),
		"10.0.0.9:6464=10.0.0.9:6464", "one:6464=10.0.0.1:6464", "many:6464=10.0.0.4:6464", "[fd00::2]:6464=[fd00::2]:6464")
}

// TestFamily: with a family, a dual-stack name is looked up in it alone,
// and is one target labelled by its entry; an address of the other
// family, as an entry or in a file_sd file, gives no target and is no
// failure; a name with no address of the family is a failure.
func TestFamily(t *testing.T) {
	r := resolver{"dual": {"10.0.0.1", "fd00::1"}, "six": {"fd00::6"}}
	file := filepath.Join(t.TempDir(), "sd.json")
	if err := os.WriteFile(file, []byte(`[{"targets": ["10.0.0.7:6464", "[fd00::7]:6464"]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		family Family
		want   []string
		failed int
	}{
		{AnyFamily, []string{"10.0.0.1:6464=10.0.0.1:6464", "[fd00::1]:6464=[fd00::1]:6464", "six:6464=[fd00::6]:6464",
			"10.0.0.9:6464=10.0.0.9:6464", "10.0.0.7:6464=10.0.0.7:6464", "[fd00::7]:6464=[fd00::7]:6464"}, 0},
		{IPv4, []string{"dual:6464=10.0.0.1:6464", "10.0.0.9:6464=10.0.0.9:6464", "10.0.0.7:6464=10.0.0.7:6464"}, 1},
		{IPv6, []string{"dual:6464=[fd00::1]:6464", "six:6464=[fd00::6]:6464", "[fd00::7]:6464=[fd00::7]:6464"}, 0},
	} {
		var failed []string
		d, err := New(Options{Entries: []string{"dual:6464", "six:6464", "10.0.0.9:6464", "file:" + file},
			Interval: time.Minute, Resolver: r, Family: c.family, Failed: func(s string) { failed = append(failed, s) }})
		if err != nil {
			t.Fatal(err)
		}
		ts, err := d.Resolve(context.Background(), time.Now())
		expect(t, string(c.family), ts, c.want...)
		if len(failed) != c.failed || (c.failed > 0) != (err != nil) {
			t.Errorf("%s: failures %v, error %v; want %d", c.family, failed, err, c.failed)
		}
		if c.failed > 0 && !strings.Contains(err.Error(), "no ipv4 addresses") {
			t.Errorf("%s: error %v, want it to say no ipv4 addresses", c.family, err)
		}
	}
}

// TestSTAMPTargets: a stamp:// entry is a STAMP target, labelled by the
// entry; a name with several addresses gives one per address, each
// labelled stamp:// and the address; the same entries in a file_sd file
// likewise.
func TestSTAMPTargets(t *testing.T) {
	r := resolver{"r1": {"10.0.0.1"}, "pair": {"10.0.0.2", "10.0.0.3"}}
	file := filepath.Join(t.TempDir(), "sd.json")
	if err := os.WriteFile(file, []byte(`[{"targets": ["stamp://10.0.0.4:862", "10.0.0.5:6464"]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Entries: []string{"stamp://r1:862", "stamp://pair:862", "r1:6464", "file:" + file},
		Interval: time.Minute, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := d.Resolve(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "resolved", ts, "stamp://r1:862=10.0.0.1:862", "stamp://10.0.0.2:862=10.0.0.2:862",
		"stamp://10.0.0.3:862=10.0.0.3:862", "r1:6464=10.0.0.1:6464", "stamp://10.0.0.4:862=10.0.0.4:862",
		"10.0.0.5:6464=10.0.0.5:6464")
	for _, tg := range ts {
		if tg.STAMP != strings.HasPrefix(tg.Label, STAMPPrefix) {
			t.Errorf("%s: STAMP %v", tg.Label, tg.STAMP)
		}
	}
}

// TestCheck: entries must be host:port with a port from 1 to 65535, or a
// file with a path.
func TestCheck(t *testing.T) {
	for _, ok := range []string{"a:1", "10.0.0.1:65535", "[::1]:6464", "file:/x.json", "file:sd.yml", "stamp://r1:862", "stamp://[::1]:862"} {
		if err := Check(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"a", ":6464", "a:0", "a:65536", "a:x", "file:", "", "stamp://", "stamp://r1", "stamp://:862"} {
		if err := Check(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestFileSD: a file_sd file, JSON or YAML, lists entries resolved like
// any other; a change is read at the next check; a file that breaks, or
// goes, keeps the targets it gave, counted and said once per change; a
// malformed target in it is left out and counted.
func TestFileSD(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"sd.json", "sd.yml"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			write := func(json, yaml string) {
				t.Helper()
				content := yaml
				if filepath.Ext(name) == ".json" {
					content = json
				}
				if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(`[{"targets": ["10.0.0.1:6464", "svc:6464"], "labels": {"zone": "a"}}, {"targets": ["10.0.0.2:6464"]}]`,
				"- targets: ['10.0.0.1:6464', 'svc:6464']\n  labels: {zone: a}\n- targets: ['10.0.0.2:6464']\n")
			var failed []string
			d, err := New(Options{Entries: []string{"file:" + path}, Interval: time.Hour, Resolver: resolver{"svc": {"10.0.0.7"}},
				Failed: func(s string) { failed = append(failed, s) }})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			ts := d.Targets(context.Background(), now, false)
			expect(t, "first read", ts, "10.0.0.1:6464=10.0.0.1:6464", "svc:6464=10.0.0.7:6464", "10.0.0.2:6464=10.0.0.2:6464")

			write(`[{"targets": ["10.0.0.2:6464", "10.0.0.3:6464"]}]`, "- targets: ['10.0.0.2:6464', '10.0.0.3:6464']\n")
			now = now.Add(time.Second)
			expect(t, "changed", d.Targets(context.Background(), now, false),
				"10.0.0.2:6464=10.0.0.2:6464", "10.0.0.3:6464=10.0.0.3:6464")

			write(`[{"targets": ["10.0.0.2:6464"`, "- targets: ['10.0.0.2:6464'\n")
			for range 2 {
				now = now.Add(time.Second)
				expect(t, "broken", d.Targets(context.Background(), now, false),
					"10.0.0.2:6464=10.0.0.2:6464", "10.0.0.3:6464=10.0.0.3:6464")
			}
			if len(failed) != 1 || failed[0] != "file" {
				t.Fatalf("failures %v after a broken file, checked twice; want one file failure", failed)
			}
			write(`[{"targets": ["10.0.0.2:6464", "nonsense"]}]`, "- targets: ['10.0.0.2:6464', 'nonsense']\n")
			now = now.Add(time.Second)
			expect(t, "fixed, with a malformed target", d.Targets(context.Background(), now, false), "10.0.0.2:6464=10.0.0.2:6464")
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				now = now.Add(time.Second)
				expect(t, "gone", d.Targets(context.Background(), now, false), "10.0.0.2:6464=10.0.0.2:6464")
			}
			if len(failed) != 3 {
				t.Fatalf("failures %v; want the broken file, the malformed target and the file gone, once each", failed)
			}
		})
	}
}

// TestRun: Run calls update only when the targets change.
func TestRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sd.yml")
	if err := os.WriteFile(path, []byte("- targets: ['10.0.0.1:6464']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Entries: []string{"file:" + path}, Interval: time.Hour, FileCheck: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	first := d.Targets(context.Background(), time.Now(), true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	updates := make(chan []Target, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx, first, func(ts []Target) { updates <- ts })
	}()
	// A file's modification time may not change within a clock tick: the
	// size does.
	if err := os.WriteFile(path, []byte("- targets: ['10.0.0.1:6464', '10.0.0.22:6464']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case ts := <-updates:
		expect(t, "update", ts, "10.0.0.1:6464=10.0.0.1:6464", "10.0.0.22:6464=10.0.0.22:6464")
	case <-ctx.Done():
		t.Fatal("no update after the file changed")
	}
	cancel()
	<-done
	if len(updates) != 0 {
		t.Fatalf("%d more updates without a change", len(updates))
	}
}
