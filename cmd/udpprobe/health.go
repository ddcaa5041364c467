package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

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
	var addr string
	if args[0] == config.ModeReceiver {
		cfg, err := config.LoadReceiver()
		if err != nil {
			return configError(stderr, args[0], err)
		}
		addr = cfg.WebListenAddress
	} else {
		cfg, err := config.LoadSender()
		if err != nil {
			return configError(stderr, args[0], err)
		}
		addr = cfg.WebListenAddress
	}
	url := "http://" + localAddress(addr) + "/-/ready"
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v\n", err)
		return exitFailure
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %v\n", err)
		return exitFailure
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "udpprobe healthcheck: %s: %s\n", url, resp.Status)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", url)
	return exitOK
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
