package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "udpprobe test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fetch GETs url with the client, as user:password when user is set, and
// returns the status, or 0 and the error.
func fetch(c *http.Client, url, user, password string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestWebConfig: with UDPPROBE_WEB_CONFIG_FILE, /metrics needs the basic
// auth credentials, and with TLS configured plain HTTP fails; the
// healthcheck still reaches the daemon. A bad file is a configuration error
// at start; a file that breaks while the daemon runs changes nothing but
// udpprobe_web_config_last_reload_successful, and the healthcheck still
// passes.
func TestWebConfig(t *testing.T) {
	clearEnv(t)
	every := webConfigCheckEvery
	webConfigCheckEvery = 10 * time.Millisecond
	t.Cleanup(func() { webConfigCheckEvery = every })
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := "basic_auth_users:\n  prometheus: " + string(hash) + "\n"
	tlsOnly := "tls_server_config:\n  cert_file: " + cert + "\n  key_file: " + key + "\n"
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		name, config, scheme string
	}{
		{"basic auth", users, "http"},
		{"TLS and basic auth", tlsOnly + users, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yml")
			write(t, file, tc.config)
			web := testproc.FreeAddr(t, "tcp")
			t.Setenv("UDPPROBE_WEB_CONFIG_FILE", file)
			t.Setenv("UDPPROBE_WEB_LISTEN_ADDRESS", web)
			t.Setenv("UDPPROBE_LISTEN_ADDRESS", testproc.FreeAddr(t, "udp"))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() { done <- run(ctx, []string{"receiver"}, io.Discard, io.Discard) }()
			defer func() {
				cancel()
				if code := <-done; code != exitOK {
					t.Errorf("receiver exit %d", code)
				}
			}()
			url := tc.scheme + "://" + web + "/metrics"
			var code int
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if code, _, err = fetch(trusting, url, "", ""); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if code != http.StatusUnauthorized {
				t.Fatalf("GET %s without credentials: %d, %v; want 401", url, code, err)
			}
			if code, _, _ := fetch(trusting, url, "prometheus", "wrong"); code != http.StatusUnauthorized {
				t.Errorf("GET %s with a wrong password: %d, want 401", url, code)
			}
			code, body, err := fetch(trusting, url, "prometheus", "s3cret")
			m, perr := scrape.Parse(strings.NewReader(body))
			if peers, ok := m.Value("udpprobe_receiver_peers"); code != http.StatusOK || perr != nil || !ok || peers != 0 {
				t.Errorf("GET %s with the credentials: %d, %v, %v; want the metrics with 0 peers", url, code, err, perr)
			}
			// Unauthenticated clients scraping in a loop never take one of
			// the scrape slots: every authenticated scrape meanwhile answers.
			stop := make(chan struct{})
			var crowd sync.WaitGroup
			var refused atomic.Int64
			for range 32 {
				crowd.Go(func() {
					for i := 0; i < 2000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if code, _, _ := fetch(trusting, url, "", ""); code == http.StatusUnauthorized {
							refused.Add(1)
						}
					}
				})
			}
			for deadline := time.Now().Add(10 * time.Second); refused.Load() < 200 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			for i := range 20 {
				if code, _, err := fetch(trusting, url, "prometheus", "s3cret"); code != http.StatusOK {
					t.Errorf("scrape %d beside 32 unauthenticated clients: %d, %v; want 200", i, code, err)
				}
			}
			close(stop)
			crowd.Wait()
			trusting.CloseIdleConnections()
			if n := refused.Load(); n < 200 {
				t.Errorf("the crowd was refused %d times, want 200 at least: it did not load the server", n)
			}
			if tc.scheme == "https" {
				code, _, err := fetch(http.DefaultClient, "http://"+web+"/metrics", "prometheus", "s3cret")
				if code == http.StatusOK {
					t.Errorf("plain HTTP to a TLS endpoint: %d, %v; want a failure", code, err)
				}
			}
			if code, stdout, stderr := runArgs(t, "healthcheck", "receiver"); code != exitOK ||
				!strings.Contains(stdout, tc.scheme+"://") || !strings.Contains(stdout, "up (basic auth") {
				t.Errorf("healthcheck: exit %d, %q %q", code, stdout, stderr)
			}

			write(t, file, "basic_auth_users: [\n") // broken while the daemon runs
			reloaded := func() float64 {
				_, body, _ := fetch(trusting, url, "prometheus", "s3cret")
				m, _ := scrape.Parse(strings.NewReader(body))
				v, _ := m.Value("udpprobe_web_config_last_reload_successful")
				return v
			}
			for deadline := time.Now().Add(10 * time.Second); reloaded() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("udpprobe_web_config_last_reload_successful never went to 0 with a broken file")
				}
			}
			if code, _, err := fetch(trusting, url, "prometheus", "s3cret"); code != http.StatusOK {
				t.Errorf("GET %s with the credentials and a broken file: %d, %v; want 200 by the last good one", url, code, err)
			}
			if code, _, _ := fetch(trusting, url, "", ""); code != http.StatusUnauthorized {
				t.Errorf("GET %s without credentials and a broken file: %d; want 401 by the last good one", url, code)
			}
			if code, stdout, stderr := runArgs(t, "healthcheck", "receiver"); code != exitOK ||
				!strings.Contains(stdout, tc.scheme+"://") || !strings.Contains(stderr, "trying HTTPS, then HTTP") {
				t.Errorf("healthcheck with a broken file: exit %d, %q %q", code, stdout, stderr)
			}
			trusting.CloseIdleConnections()
		})
	}

	t.Setenv("UDPPROBE_WEB_CONFIG_FILE", filepath.Join(dir, "missing.yml"))
	if code, _, stderr := runArgs(t, "receiver"); code != exitUsage || !strings.Contains(stderr, "UDPPROBE_WEB_CONFIG_FILE=") {
		t.Errorf("a missing web config file: exit %d, %q", code, stderr)
	}
}
