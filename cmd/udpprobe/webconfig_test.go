package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/udpprobe/udpprobe/internal/metrics"
)

// TestLastGood: the copy exporter-toolkit reads follows the operator's
// file while it validates, and stays at the last good one while it does
// not, with one warning per bad change and the gauge at 0; relative
// certificate paths keep pointing next to the operator's file.
func TestLastGood(t *testing.T) {
	dir := t.TempDir()
	selfSigned(t, dir) // cert.pem and key.pem
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	good := "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  alice: " + string(hash) + "\n"
	src := filepath.Join(dir, "web.yml")
	write(t, src, good)
	core, logs := observer.New(zapcore.InfoLevel)
	ok := metrics.NewWebConfigReloaded(prometheus.NewPedanticRegistry())
	l, err := newLastGood(src, zap.New(core), ok)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := func() string {
		t.Helper()
		b, err := os.ReadFile(l.path())
		if err != nil {
			t.Fatal(err)
		}
		if err := web.Validate(l.path()); err != nil {
			t.Fatalf("the copy served does not validate: %v\n%s", err, b)
		}
		return string(b)
	}
	if s := served(); !strings.Contains(s, filepath.Join(dir, "cert.pem")) || !strings.Contains(s, "alice") {
		t.Fatalf("the copy served:\n%s\nwant the certificate's absolute path and alice", s)
	}
	warnings := func() int { return logs.FilterLevelExact(zapcore.WarnLevel).Len() }

	for i, bad := range []string{
		"basic_auth_users: [\n",                                               // not YAML
		"basic_auth_users:\n  alice: not-a-hash\n",                            // not a bcrypt hash
		"tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n", // no such certificate
	} {
		write(t, src, bad)
		l.check()
		l.check() // the same bad file again: no second warning
		if s := served(); !strings.Contains(s, "alice: "+string(hash)) {
			t.Errorf("bad file %d: the copy served changed:\n%s", i, s)
		}
		if w, g := warnings(), testutil.ToFloat64(ok); w != i+1 || g != 0 {
			t.Errorf("bad file %d: %d warnings, gauge %v; want %d and 0", i, w, g, i+1)
		}
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	l.check()
	if w := warnings(); w != 4 {
		t.Errorf("the file removed: %d warnings, want 4", w)
	}

	write(t, src, strings.ReplaceAll(good, "alice", "bob"))
	l.check()
	if s, g := served(), testutil.ToFloat64(ok); !strings.Contains(s, "bob") || strings.Contains(s, "alice") || g != 1 {
		t.Errorf("fixed: gauge %v, the copy served:\n%s\nwant bob's and 1", g, s)
	}
	if n := logs.FilterMessageSnippet("changed: serving with it").Len(); n != 1 {
		t.Errorf("%d lines saying the fixed file is served, want 1", n)
	}
}
