package kubernetes

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "write the generated files instead of checking them (make generate)")

// The files a kustomization cannot read where they live (it reads nothing
// outside its folder), and the copies the base ships.
const (
	rulesFile     = "../rules/udpprobe.rules.yml"
	dashboardFile = "../grafana/dashboards/udpprobe.json"
	ruleCopy      = "base/prometheusrule.yaml"
	dashboardCopy = "base/dashboards/udpprobe.json"
)

const ruleHeader = `# Generated from deploy/rules/udpprobe.rules.yml by ` + "`make generate`" + `: edit
# that file, not this one (deploy/kubernetes/generate_test.go checks that
# they agree). kube-prometheus-stack's Prometheus selects rules labelled
# with its Helm release, as for the PodMonitor.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: udpprobe
  labels:
    app.kubernetes.io/name: udpprobe
    release: kube-prometheus-stack
spec:
`

// prometheusRule is the rules file as the spec of a PrometheusRule, its
// comments kept: every line indented under spec.
func prometheusRule(rules []byte) []byte {
	var b bytes.Buffer
	b.WriteString(ruleHeader)
	for line := range bytes.Lines(rules) {
		if len(bytes.TrimSpace(line)) > 0 {
			b.WriteString("  ")
		}
		b.Write(line)
	}
	return b.Bytes()
}

// TestGenerated: the base's PrometheusRule is the rules file and its
// dashboard the dashboard file, byte for byte; -update writes them.
func TestGenerated(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dashboard, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{ruleCopy: prometheusRule(rules), dashboardCopy: dashboard} {
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not generated from the current files (%v): run make generate", path, err)
		}
	}
}
