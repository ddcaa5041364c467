// Command udpprobe measures a UDP path: a sender emits sequence-numbered
// datagrams, a receiver counts loss, duplication, reordering, loss periods,
// corruption and late arrivals, and both export Prometheus metrics.
//
//	udpprobe receiver    run the receiver (configured by UDPPROBE_* variables)
//	udpprobe sender      run the sender
//	udpprobe mesh        run a mesh node: receiver, reflector and sender at once
//	udpprobe run [flags] TARGET
//	                     probe one target for a while and print a summary
//	udpprobe healthcheck receiver|sender|mesh
//	                     exit 0 if that daemon (same variables) is ready
//	udpprobe check receiver|sender|mesh
//	                     exit 0 if the UDPPROBE_* variables are a valid
//	                     configuration of that mode, 2 if not
//	udpprobe version     print the version
//	udpprobe help        print the configuration table
//
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/udpprobe/udpprobe/internal/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "udpprobe: shutting down; send the signal again to exit at once")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "udpprobe: second signal, exiting now")
		os.Exit(exitFailure)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usageText = `Usage: udpprobe <mode>

Modes:
  receiver   receive probes and export what the path did to them
  sender     send probes to one or more receivers
  mesh       be a node of a mesh: probe the other members, count and
             reflect their probes, over one socket
  run [flags] TARGET
             probe one target for a while (10 s) and print a summary;
             exit 1 when a threshold is crossed (udpprobe run -h)
  healthcheck receiver|sender|mesh
             exit 0 if the daemon configured by the same variables is ready
  check receiver|sender|mesh
             check the configuration that mode would start with, and exit
  version    print version information
  help       print this text and the configuration table

Configuration comes from UDPPROBE_* environment variables; an unknown one is
an error. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return runHealthcheck(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "check" {
		return runCheck(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		return runOneShot(ctx, args[1:], stdout, stderr)
	}
	if len(args) != 1 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "receiver":
		return runReceiver(ctx, stderr)
	case "sender":
		return runSender(ctx, stderr)
	case "mesh":
		return runMesh(ctx, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		return printHelp(stdout)
	}
	fmt.Fprintf(stderr, "udpprobe: unknown mode %q\n\n%s", args[0], usageText)
	return exitUsage
}

// runCheck loads the configuration a daemon of the given mode would start
// with, from the same variables, files included (keys, web configuration),
// and reports it: for manifests and deployment pipelines, which can check
// an environment without starting a daemon. Names are not resolved.
func runCheck(args []string, stdout, stderr io.Writer) int {
	const usage = "Usage: udpprobe check receiver|sender|mesh\n"
	if len(args) != 1 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case config.ModeReceiver:
		_, err = config.LoadReceiver()
	case config.ModeSender:
		_, err = config.LoadSender()
	case config.ModeMesh:
		_, err = config.LoadMesh()
	default:
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	if err != nil {
		return configError(stderr, args[0], err)
	}
	fmt.Fprintf(stdout, "udpprobe %s: configuration OK\n", args[0])
	return exitOK
}
