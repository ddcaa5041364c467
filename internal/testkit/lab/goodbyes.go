package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sent is what a sender's or a mesh node's JSON log says it sent to
// target, over every session that ended with a goodbye: one more than each
// goodbye's last sequence number.
func Sent(lines []string, target string) (total uint64, sessions int, err error) {
	for _, line := range lines {
		if !strings.Contains(line, `"msg":"session ended with a goodbye"`) {
			continue
		}
		var l struct {
			Target string `json:"target"`
			Last   uint64 `json:"last_sequence"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", line, err)
		}
		if l.Target == target {
			total += l.Last + 1
			sessions++
		}
	}
	return total, sessions, nil
}

// Probed is, by target, the addresses a sender's or a mesh node's JSON log
// says it started probing it at, in order.
func Probed(lines []string) (map[string][]netip.Addr, error) {
	out := map[string][]netip.Addr{}
	for _, line := range lines {
		if !strings.Contains(line, `"msg":"probing a target"`) {
			continue
		}
		var l struct {
			Target  string `json:"target"`
			Address string `json:"address"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		a, err := netip.ParseAddrPort(l.Address)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		out[l.Target] = append(out[l.Target], a.Addr())
	}
	return out, nil
}

// ProbedOnce reports, from a sender's or a mesh node's JSON log, whether
// it started probing n targets, each once, at an IPv6 address if v6 is
// set and an IPv4 one if not.
func ProbedOnce(lines []string, n int, v6 bool) error {
	probed, err := Probed(lines)
	if err != nil {
		return err
	}
	family := "IPv4"
	if v6 {
		family = "IPv6"
	}
	var errs []error
	for target, as := range probed {
		if len(as) != 1 || as[0].Is6() != v6 {
			errs = append(errs, fmt.Errorf("probed %s at %v, want once, over %s", target, as, family))
		}
	}
	if len(probed) != n {
		errs = append(errs, fmt.Errorf("probed %d targets, want %d", len(probed), n))
	}
	return errors.Join(errs...)
}
