package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestSystemdUnits: each unit runs its own mode, reads the shared and its
// own environment file, passes systemd-analyze verify, and keeps its
// exposure level (systemd-analyze security) at 2.0 or below. verify insists
// that ExecStart exists, so the copy it checks points at a fresh build.
func TestSystemdUnits(t *testing.T) {
	analyze := testproc.Require(t, "SYSTEMD_ANALYZE", "apt-get install systemd", "systemd-analyze")
	bin := testproc.Build(t, "../cmd/udpprobe")
	dir := t.TempDir()
	for _, mode := range []string{"receiver", "sender", "mesh"} {
		name := "udpprobe-" + mode + ".service"
		unit := string(read(t, filepath.Join("systemd", name)))
		for _, line := range []string{
			"ExecStart=/usr/local/bin/udpprobe " + mode,
			"EnvironmentFile=-/etc/default/udpprobe",
			"EnvironmentFile=-/etc/default/udpprobe-" + mode,
		} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).MatchString(unit) {
				t.Errorf("%s lacks %q", name, line)
			}
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/udpprobe", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		// Warnings about other units the machine has (irtt.service, say) are
		// not this unit's.
		if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || about(out, name) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
		out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.0 (%v)\n%s", name, err, out)
		}
		if m := regexp.MustCompile(`Overall exposure level for \S+: (\S+)`).FindSubmatch(out); m != nil {
			t.Logf("%s: exposure %s", name, m[1])
		}
	}
}

// about reports whether systemd output mentions the unit name.
func about(out []byte, name string) bool {
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, name) {
			return true
		}
	}
	return false
}
