package lab

import (
	"encoding/json"
	"fmt"
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
