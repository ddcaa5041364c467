package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// iperfResult is one iperf3 run.
type iperfResult struct {
	rate        float64
	sent, lost  uint64
	delivered   float64
	kernelDrops uint64
	send, recv  usage
}

func (r iperfResult) row() string {
	return fmt.Sprintf("| iperf3 | %.0f | %d | %.0f | %d (its loss) | – / %d | – | %.2f + %.2f | %.1f / %.1f |",
		r.rate, r.sent, r.delivered, r.lost, r.kernelDrops, r.send.cpu.Seconds(), r.recv.cpu.Seconds(), mib(r.send.rss), mib(r.recv.rss))
}

// iperfReport is the part of iperf3's JSON report the bench reads.
type iperfReport struct {
	End struct {
		Sum struct {
			Packets     uint64  `json:"packets"`
			LostPackets uint64  `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

func parseIperf(b []byte) (iperfReport, error) {
	var rep iperfReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("iperf3 report: %w", err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("iperf3: %s", rep.Error)
	}
	if rep.End.Sum.Packets == 0 || rep.End.Sum.Seconds == 0 {
		return rep, errors.New("iperf3 report: no packets")
	}
	return rep, nil
}

// iperf runs iperf3 -u -l 64 at rate datagrams/s: -b counts payload bits.
func iperf(o options, rate float64) (iperfResult, error) {
	r := iperfResult{rate: rate}
	_, port, err := net.SplitHostPort(free("tcp"))
	if err != nil {
		return r, err
	}
	srv, err := startReady(o.iperf3, "Server listening", nil, "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", port)
	if err != nil {
		return r, err
	}
	defer srv.Kill()
	var rep iperfReport
	r.kernelDrops, err = kernelDrops(func() error {
		secs := strconv.Itoa(max(1, int(o.duration.Round(time.Second).Seconds())))
		cli, err := start(o.iperf3, nil, "-c", "127.0.0.1", "-p", port, "-u", "-l", "64",
			"-b", strconv.FormatFloat(rate*64*8, 'f', 0, 64), "-t", secs, "-J")
		if err != nil {
			return err
		}
		defer cli.Kill()
		if r.send, err = finish(cli, o.duration+30*time.Second); err != nil {
			return err
		}
		if r.recv, err = finish(srv, 10*time.Second); err != nil {
			return err
		}
		rep, err = parseIperf([]byte(output(cli)))
		return err
	})
	if err != nil {
		return r, err
	}
	r.sent, r.lost = rep.End.Sum.Packets, rep.End.Sum.LostPackets
	r.delivered = float64(r.sent-r.lost) / rep.End.Sum.Seconds
	return r, nil
}

// irttReport is the part of irtt's JSON output the bench reads.
type irttReport struct {
	Stats struct {
		PacketsSent     uint64 `json:"packets_sent"`
		PacketsReceived uint64 `json:"packets_received"`
	} `json:"stats"`
}

// irttRun runs irtt's client against its server at the same interval.
func irttRun(o options) (lowResult, error) {
	r, err := irttRound(o)
	if err != nil {
		err = fmt.Errorf("irtt: %w", err)
	}
	return r, err
}

func irttRound(o options) (lowResult, error) {
	r := lowResult{tool: "irtt"}
	addr := free("udp")
	srv, err := startReady(o.irtt, "ListenerStart", nil, "server", "-b", addr, "-i", "0")
	if err != nil {
		return r, err
	}
	defer srv.Kill()
	dir, err := os.MkdirTemp("", "udpprobe-bench")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "irtt.json")
	interval := time.Duration(float64(time.Second) / o.lowRate)
	cli, err := start(o.irtt, nil, "client", "-i", interval.String(), "-d", o.lowDuration.String(), "-Q", "-o", out, addr)
	if err != nil {
		return r, err
	}
	defer cli.Kill()
	if r.client, err = finish(cli, o.lowDuration+30*time.Second); err != nil {
		return r, err
	}
	if r.server, err = stop(srv, 10*time.Second); err != nil {
		return r, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	var rep irttReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return r, fmt.Errorf("irtt report: %w", err)
	}
	r.packets = rep.Stats.PacketsSent
	if r.packets == 0 {
		return r, errors.New("irtt sent nothing")
	}
	return r, nil
}
