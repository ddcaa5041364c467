package main

import (
	"context"
	"crypto/tls"
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
	if len(args) != 1 || (args[0] != config.ModeReceiver && args[0] != config.ModeSender) {
		fmt.Fprintf(stderr, "Usage: udpprobe healthcheck receiver|sender\n")
		return exitUsage
	}
	var addr, webConfig string
	if args[0] == config.ModeReceiver {
		cfg, err := config.LoadReceiver()
		if err != nil {
			return configError(stderr, args[0], err)
		}
		addr, webConfig = cfg.WebListenAddress, cfg.WebConfigFile
	} else {
		cfg, err := config.LoadSender()
		if err != nil {
			return configError(stderr, args[0], err)
		}
		addr, webConfig = cfg.WebListenAddress, cfg.WebConfigFile
	}
	client, scheme, err := healthClient(webConfig)
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: UDPPROBE_WEB_CONFIG_FILE: %v\n", err)
		return exitFailure
	}
	url := scheme + "://" + localAddress(addr) + "/-/ready"
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v\n", err)
		return exitFailure
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v\n", err)
		return exitFailure
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		// Basic auth guards every endpoint and the check has no password:
		// the daemon answers, which it does only while it runs.
		fmt.Fprintf(stdout, "%s: up (basic auth hides readiness)\n", url)
		return exitOK
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %s: %s\n", url, resp.Status)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", url)
	return exitOK
}

// healthClient returns the client and scheme that reach this host's daemon
// under its web configuration: HTTPS where it configures TLS. The check
// asks its own host, so it does not verify the certificate; a daemon that
// requires client certificates cannot be checked this way.
func healthClient(webConfig string) (*http.Client, string, error) {
	if webConfig == "" {
		return http.DefaultClient, "http", nil
	}
	b, err := os.ReadFile(webConfig)
	if err != nil {
		return nil, "", err
	}
	var c web.Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, "", err
	}
	if !c.TLSConfig.IsEnabled() {
		return http.DefaultClient, "http", nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // our own daemon, on this host
	return &http.Client{Transport: t}, "https", nil
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
