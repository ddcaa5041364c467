package deploy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile = "../docker-compose.yml"
	// dualStackFile is the override that puts the stack on a dual-stack
	// network.
	dualStackFile = "compose/dual-stack.yml"
)

// loadCompose loads the compose file as `docker compose` would, from the
// repository root, with no variables from the environment.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	return loadComposeFiles(t, []string{composeFile}, profiles...)
}

// loadComposeFiles loads compose files, the later overriding the earlier,
// as `docker compose -f … -f …` would.
func loadComposeFiles(t *testing.T, files []string, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory(".."),
		cli.WithProfiles(profiles), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", files, err)
	}
	return p
}

// TestComposeDualStack: with the dual-stack override the stack's network
// has IPv6 and a subnet of each family, private ones; every service is
// still there and on it; the sender's target is still the receiver's
// name, and no family is chosen, so it probes both.
func TestComposeDualStack(t *testing.T) {
	p := loadComposeFiles(t, []string{composeFile, dualStackFile})
	n, ok := p.Networks["default"]
	if !ok || n.EnableIPv6 == nil || !*n.EnableIPv6 || len(n.Ipam.Config) != 2 {
		t.Fatalf("network default %+v: want IPv6 enabled and two subnets", n)
	}
	var v4, v6 bool
	for _, c := range n.Ipam.Config {
		pfx, err := netip.ParsePrefix(c.Subnet)
		if err != nil || !pfx.Addr().IsPrivate() {
			t.Errorf("subnet %q: want a private prefix (%v)", c.Subnet, err)
			continue
		}
		v4, v6 = v4 || pfx.Addr().Is4(), v6 || pfx.Addr().Is6()
	}
	if !v4 || !v6 {
		t.Errorf("subnets %+v: want one of each family", n.Ipam.Config)
	}
	if len(p.Services) != len(loadCompose(t).Services) {
		t.Errorf("%d services with the override, want the stack's %d", len(p.Services), len(loadCompose(t).Services))
	}
	for name, s := range p.Services {
		if _, on := s.Networks["default"]; !on && len(s.Networks) > 0 {
			t.Errorf("%s is not on the default network: %v", name, s.Networks)
		}
	}
	env := p.Services["sender"].Environment
	if tg := env["UDPPROBE_TARGETS"]; tg == nil || *tg != "receiver:6464" || env["UDPPROBE_IP_FAMILY"] != nil {
		t.Errorf("sender: UDPPROBE_TARGETS %v, UDPPROBE_IP_FAMILY %v; want the receiver's name and both families", tg, env["UDPPROBE_IP_FAMILY"])
	}
}

func TestComposeServices(t *testing.T) {
	if regexp.MustCompile(`(?m)^version:`).Match(read(t, composeFile)) {
		t.Error("the Compose Specification has no top-level version:")
	}
	p := loadCompose(t)
	var names []string
	for name := range p.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"alertmanager", "grafana", "prometheus", "receiver", "sender"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v (netem only with its profile)", names, want)
	}
	p = loadCompose(t, "netem")
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:v?[0-9]+\.[0-9]+(\.[0-9]+)?$`)
	for name, s := range p.Services {
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		if s.Build == nil && !pinned.MatchString(s.Image) {
			t.Errorf("%s: image %q is not pinned to an exact version", name, s.Image)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with %q, want service_healthy", name, dep, d.Condition)
			}
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist: %v", name, v.Source, err)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable; configuration is mounted read-only", name, v.Source)
			}
		}
	}
	for _, name := range []string{"receiver", "sender"} {
		s := p.Services[name]
		if s.Build == nil || s.Build.Context != filepath.Clean(filepath.Join(mustAbs(t, ".."))) {
			t.Errorf("%s is not built from the repository's Dockerfile: %+v", name, s.Build)
		}
		if hc := s.HealthCheck.Test; !slices.Equal(hc, []string{"CMD", "/udpprobe", "healthcheck", name}) {
			t.Errorf("%s healthcheck %v", name, hc)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || len(s.CapAdd) != 0 || s.Privileged ||
			!slices.Contains(s.SecurityOpt, "no-new-privileges:true") || s.User != "" {
			t.Errorf("%s is not locked down (read-only root, no capabilities, no new privileges, the image's "+
				"non-root user): read_only %v, cap_drop %v, cap_add %v, security_opt %v, user %q",
				name, s.ReadOnly, s.CapDrop, s.CapAdd, s.SecurityOpt, s.User)
		}
	}
	udp := false
	for _, port := range p.Services["receiver"].Ports {
		udp = udp || port.Target == 6464 && port.Protocol == "udp" && port.Published == "6464"
	}
	if !udp {
		t.Errorf("the receiver does not publish 6464/udp: %+v", p.Services["receiver"].Ports)
	}
	if env := p.Services["sender"].Environment["UDPPROBE_TARGETS"]; env == nil || *env != "receiver:6464" {
		t.Errorf("the sender does not target the receiver service: %v", env)
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestComposeNetem: the netem sidecar shares the sender's network namespace
// with NET_ADMIN and applies $NETEM, which has a default.
func TestComposeNetem(t *testing.T) {
	s := loadCompose(t, "netem").Services["netem"]
	if s.NetworkMode != "service:sender" || !slices.Contains(s.CapAdd, "NET_ADMIN") || !slices.Equal(s.Profiles, []string{"netem"}) {
		t.Errorf("netem: network mode %q, capabilities %v, profiles %v", s.NetworkMode, s.CapAdd, s.Profiles)
	}
	cmd := strings.Join(s.Command, " ")
	if env := s.Environment["NETEM"]; env == nil || !strings.Contains(*env, "loss") ||
		!strings.Contains(cmd, "tc qdisc replace dev eth0 root netem $NETEM") {
		t.Errorf("netem: NETEM %v, command %q", env, cmd)
	}
}

// TestComposeMatchesConfigs: the paths and versions the compose file uses
// are the ones the other files expect.
func TestComposeMatchesConfigs(t *testing.T) {
	p := loadCompose(t)
	mount := func(service, target string) string {
		t.Helper()
		for _, v := range p.Services[service].Volumes {
			if v.Target == target {
				return v.Source
			}
		}
		t.Fatalf("%s mounts nothing at %s", service, target)
		return ""
	}
	// Prometheus finds its rules relative to its configuration file.
	if !strings.Contains(string(read(t, "prometheus.yml")), "- rules/*.rules.yml") ||
		mount("prometheus", "/etc/prometheus/rules") != mustAbs(t, "rules") ||
		mount("prometheus", "/etc/prometheus/prometheus.yml") != mustAbs(t, "prometheus.yml") {
		t.Error("prometheus.yml's rule_files and the compose mounts disagree")
	}
	mount("alertmanager", "/etc/alertmanager/alertmanager.yml")
	// Grafana: the provider's path is where the dashboards are mounted, and
	// the home dashboard is one of them.
	dashboards := mount("grafana", "/var/lib/grafana/dashboards")
	if !strings.Contains(string(read(t, "grafana/provisioning/dashboards/udpprobe.yml")), "path: /var/lib/grafana/dashboards") {
		t.Error("the dashboard provider does not read /var/lib/grafana/dashboards")
	}
	home := p.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if home == nil || !strings.HasPrefix(*home, "/var/lib/grafana/dashboards/") {
		t.Fatalf("home dashboard %v", home)
	}
	if _, err := os.Stat(filepath.Join(dashboards, filepath.Base(*home))); err != nil {
		t.Errorf("home dashboard: %v", err)
	}
	if mount("grafana", "/etc/grafana/provisioning") != mustAbs(t, "grafana/provisioning") {
		t.Error("grafana provisioning is not mounted from deploy/grafana/provisioning")
	}
	// The scrape targets are the services and their ports.
	cfg := string(read(t, "prometheus.yml"))
	for _, target := range []string{`"receiver:8464"`, `"sender:8465"`, `"alertmanager:9093"`} {
		if !strings.Contains(cfg, target) {
			t.Errorf("prometheus.yml lacks %s", target)
		}
	}
	// The images are the versions promtool and amtool are built at.
	mk := string(read(t, "../Makefile"))
	prom := regexp.MustCompile(`PROMETHEUS_MODULE\s*:= v0\.3([0-9]{2})\.([0-9]+)`).FindStringSubmatch(mk)
	am := regexp.MustCompile(`ALERTMANAGER_MODULE\s*:= (v[0-9.]+)`).FindStringSubmatch(mk)
	if prom == nil || am == nil {
		t.Fatal("no pinned versions in the Makefile")
	}
	wantProm := "prom/prometheus:v3." + strings.TrimLeft(prom[1], "0") + "." + prom[2]
	if prom[1] == "00" {
		wantProm = "prom/prometheus:v3.0." + prom[2]
	}
	if got := p.Services["prometheus"].Image; got != wantProm {
		t.Errorf("prometheus image %s, but promtool is built at %s (%s)", got, prom[0], wantProm)
	}
	if got := p.Services["alertmanager"].Image; got != "prom/alertmanager:"+am[1] {
		t.Errorf("alertmanager image %s, but amtool is built at %s", got, am[1])
	}
}

// TestDockerfile: the image runs the binary the healthchecks call, as a
// non-root user, from a pinned builder.
func TestDockerfile(t *testing.T) {
	df := string(read(t, "../Dockerfile"))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^FROM golang:[0-9]+\.[0-9]+\.[0-9]+-\w+ AS build$`),
		regexp.MustCompile(`(?m)^FROM scratch$`),
		regexp.MustCompile(`(?m)^COPY --from=build /out/udpprobe /udpprobe$`),
		regexp.MustCompile(`(?m)^USER [1-9][0-9]*:[1-9][0-9]*$`),
		regexp.MustCompile(`(?m)^ENTRYPOINT \["/udpprobe"\]$`),
		regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 go build`),
	} {
		if !want.MatchString(df) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
}
