package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// logged decodes the JSON log lines whose message is msg, in order, and
// hands each to take, until one does not decode or take refuses it.
func logged[T any](lines []string, msg string, take func(T) error) error {
	for _, line := range lines {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		var l T
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return fmt.Errorf("%s: %w", line, err)
		}
		if err := take(l); err != nil {
			return fmt.Errorf("%s: %w", line, err)
		}
	}
	return nil
}

// Sent is what a sender's or a mesh node's JSON log says it sent to
// target, over every session that ended with a goodbye: one more than each
// goodbye's last sequence number.
func Sent(lines []string, target string) (total uint64, sessions int, err error) {
	type goodbye struct {
		Target string `json:"target"`
		Last   uint64 `json:"last_sequence"`
	}
	err = logged(lines, "session ended with a goodbye", func(l goodbye) error {
		if l.Target == target {
			total += l.Last + 1
			sessions++
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return total, sessions, nil
}

// Probed is, by target, the addresses a sender's or a mesh node's JSON log
// says it started probing it at, in order.
func Probed(lines []string) (map[string][]netip.Addr, error) {
	type probing struct {
		Target  string `json:"target"`
		Address string `json:"address"`
	}
	out := map[string][]netip.Addr{}
	err := logged(lines, "probing a target", func(l probing) error {
		a, err := netip.ParseAddrPort(l.Address)
		if err == nil {
			out[l.Target] = append(out[l.Target], a.Addr())
		}
		return err
	})
	if err != nil {
		return nil, err
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
