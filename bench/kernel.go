package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// rcvbufErrors is the kernel's count of UDP datagrams dropped for a full
// receive buffer, over all sockets (IPv4 and IPv6).
func rcvbufErrors() (uint64, error) {
	var total uint64
	for _, f := range []string{"/proc/net/snmp", "/proc/net/snmp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		n, err := parseRcvbufErrors(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		total += n
	}
	return total, nil
}

// parseRcvbufErrors reads RcvbufErrors from /proc/net/snmp (a "Udp:" header
// line and a value line) or /proc/net/snmp6 ("Udp6RcvbufErrors value").
func parseRcvbufErrors(b []byte) (uint64, error) {
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
			return strconv.ParseUint(f[1], 10, 64)
		}
		if len(f) > 0 && f[0] == "Udp:" && i+1 < len(lines) {
			vals := strings.Fields(lines[i+1])
			for j, name := range f {
				if name == "RcvbufErrors" && j < len(vals) && vals[0] == "Udp:" {
					return strconv.ParseUint(vals[j], 10, 64)
				}
			}
		}
	}
	return 0, errors.New("no RcvbufErrors")
}

// kernelDrops runs f and returns how many datagrams the kernel dropped for
// a full receive buffer meanwhile.
func kernelDrops(f func() error) (uint64, error) {
	before, err := rcvbufErrors()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := rcvbufErrors()
	return after - before, err
}

// cpuTimes is the machine's CPU time so far, all CPUs together, in clock
// ticks (/proc/stat's first line): all of it, and what the hypervisor
// took (steal).
type cpuTimes struct{ total, steal uint64 }

func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCPUTimes(b)
}

// parseCPUTimes reads the "cpu" line of /proc/stat: user, nice, system,
// idle, iowait, irq, softirq, steal, … (guest time is in user already).
func parseCPUTimes(b []byte) (cpuTimes, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("not a /proc/stat cpu line: %q", line)
	}
	var c cpuTimes
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %w", err)
		}
		c.total += n
		if i == 7 {
			c.steal = n
		}
	}
	return c, nil
}

// stolen runs f and returns the share of the machine's CPU time the
// hypervisor gave to others meanwhile: on a busy host, CPU per datagram
// grows with it (every wake-up and cache miss costs more), and a ratio of
// two runs is a ratio of two machines.
func stolen(f func() error) (float64, error) {
	before, err := readCPUTimes()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := readCPUTimes()
	if err != nil || after.total == before.total {
		return 0, err
	}
	return float64(after.steal-before.steal) / float64(after.total-before.total), nil
}
