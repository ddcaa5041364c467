package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"

	"github.com/udpprobe/udpprobe/internal/config"
)

const healthcheckTimeout = 3 * time.Second

// runHealthcheck asks a daemon of the given mode, configured by the same
// UDPPROBE_* variables, whether it is ready: for container healthchecks in
// an image that has no shell or curl. Exit 0 when ready, 1 when not.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "Usage: udpprobe healthcheck receiver|sender|mesh\n")
		return exitUsage
	}
	var addr, webConfig string
	var err error
	switch args[0] {
	case config.ModeReceiver:
		var cfg *config.Receiver
		cfg, err = config.LoadReceiver()
		addr, webConfig = cfg.WebListenAddress, cfg.WebConfigFile
	case config.ModeSender:
		var cfg *config.Sender
		cfg, err = config.LoadSender()
		addr, webConfig = cfg.WebListenAddress, cfg.WebConfigFile
	case config.ModeMesh:
		var cfg *config.Mesh
		cfg, err = config.LoadMesh()
		addr, webConfig = cfg.WebListenAddress, cfg.WebConfigFile
	default:
		fmt.Fprintf(stderr, "Usage: udpprobe healthcheck receiver|sender|mesh\n")
		return exitUsage
	}
	if err != nil && !config.OnlyWebConfig(err) {
		return configError(stderr, args[0], err)
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	client, scheme := http.DefaultClient, "http"
	if err != nil {
		// The daemon goes on serving with the last good web configuration,
		// which this check cannot read: it tries HTTPS, then plain HTTP.
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v; trying HTTPS, then HTTP\n", err)
		client, scheme = insecureClient(), "https"
	} else if tlsEnabled(webConfig) {
		client, scheme = insecureClient(), "https"
	}
	url := scheme + "://" + localAddress(addr) + "/-/ready"
	status, err := ask(ctx, client, url)
	if errors.Is(err, http.ErrSchemeMismatch) {
		url = "http://" + localAddress(addr) + "/-/ready"
		status, err = ask(ctx, client, url)
	}
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v\n", err)
		return exitFailure
	}
	if status == http.StatusUnauthorized {
		// Basic auth guards every endpoint and the check has no password:
		// the daemon answers, which it does only while it runs.
		fmt.Fprintf(stdout, "%s: up (basic auth hides readiness)\n", url)
		return exitOK
	}
	if status != http.StatusOK {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %s: %d %s\n", url, status, http.StatusText(status))
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", url)
	return exitOK
}

// tlsEnabled reports whether a web configuration file, which validated,
// configures TLS. The check asks its own host, so it does not verify the
// certificate; a daemon that requires client certificates cannot be
// checked this way.
func tlsEnabled(webConfig string) bool {
	if webConfig == "" {
		return false
	}
	b, err := os.ReadFile(webConfig)
	if err != nil {
		return false
	}
	var c web.Config
	return yaml.Unmarshal(b, &c) == nil && c.TLSConfig.IsEnabled()
}

// insecureClient speaks HTTPS without verifying the certificate, and
// plain HTTP.
func insecureClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // our own daemon, on this host
	return &http.Client{Transport: t}
}

// ask GETs url and returns the status.
func ask(ctx context.Context, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// localAddress turns a listen address into one to connect to on this host:
// an empty or unspecified host becomes loopback.
func localAddress(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip.To4() != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	} else if ip.IsUnspecified() {
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
