package kubernetes

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The variants: the base (what kubectl apply -k deploy/kubernetes installs)
// and each overlay.
const (
	base        = "."
	hostNetwork = "overlays/host-network"
	hmac        = "overlays/hmac"
	plain       = "overlays/plain-prometheus"
	dualStack   = "overlays/dual-stack"
)

var variants = []string{base, hostNetwork, hmac, plain, dualStack}

// manifest is one rendered variant, every object decoded into its API type.
type manifest struct {
	Namespace      *corev1.Namespace
	ServiceAccount *corev1.ServiceAccount
	Service        *corev1.Service
	DaemonSet      *appsv1.DaemonSet
	NetworkPolicy  *networkingv1.NetworkPolicy // none on the host network
	// None of these without the Prometheus Operator (plain-prometheus).
	PodMonitor     *monitoringv1.PodMonitor
	PrometheusRule *monitoringv1.PrometheusRule
	ConfigMap      *corev1.ConfigMap // the dashboard
}

// render builds a variant with kustomize, as kubectl apply -k does, and
// decodes every object strictly: a field the API type lacks, a misspelt
// one or one given twice fails, and so does a kind the manifest should not
// have or one it has twice.
func render(t *testing.T, dir string) *manifest {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out manifest
	slots := map[string]any{
		"v1/Namespace":                            &out.Namespace,
		"v1/ServiceAccount":                       &out.ServiceAccount,
		"v1/ConfigMap":                            &out.ConfigMap,
		"v1/Service":                              &out.Service,
		"apps/v1/DaemonSet":                       &out.DaemonSet,
		"networking.k8s.io/v1/NetworkPolicy":      &out.NetworkPolicy,
		"monitoring.coreos.com/v1/PodMonitor":     &out.PodMonitor,
		"monitoring.coreos.com/v1/PrometheusRule": &out.PrometheusRule,
	}
	for _, r := range m.Resources() {
		kind := r.GetApiVersion() + "/" + r.GetKind()
		slot, ok := slots[kind]
		if !ok {
			t.Errorf("%s: unexpected %s %s", dir, kind, r.GetName())
			continue
		}
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		p := reflect.ValueOf(slot).Elem() // a pointer to the object
		if !p.IsNil() {
			t.Errorf("%s: two of %s", dir, kind)
		}
		p.Set(reflect.New(p.Type().Elem()))
		if err := decode(b, p.Interface()); err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", dir, kind, r.GetName(), err)
		}
	}
	operator := dir != plain
	for kind, missing := range map[string]bool{
		"Namespace": out.Namespace == nil, "ServiceAccount": out.ServiceAccount == nil, "Service": out.Service == nil,
		"DaemonSet": out.DaemonSet == nil, "NetworkPolicy": out.NetworkPolicy == nil && dir != hostNetwork,
		"PodMonitor": (out.PodMonitor == nil) == operator, "PrometheusRule": (out.PrometheusRule == nil) == operator,
		"ConfigMap": (out.ConfigMap == nil) == operator,
	} {
		if missing {
			t.Errorf("%s: a %s missing, or there without the operator", dir, kind)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return &out
}

// decode is the API server's strict decoding (field validation Strict):
// YAML to JSON refusing duplicate keys, then JSON into the type refusing
// unknown fields, field names compared case-sensitively (encoding/json
// would take readOnlyRootFileSystem for readOnlyRootFilesystem).
func decode(b []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	return errors.Join(append(strict, err)...)
}

// TestStrictDecoding: an unknown, misspelt, miscased or repeated field
// fails the decoding the other tests rely on.
func TestStrictDecoding(t *testing.T) {
	for _, doc := range []string{
		"spec:\n  updateStratgy: {}\n",
		"spec:\n  template:\n    spec:\n      containers:\n        - name: x\n          securityContext:\n            readOnlyRootFileSystem: true\n",
		"spec:\n  minReadySeconds: 1\n  minReadySeconds: 2\n",
	} {
		var ds appsv1.DaemonSet
		if err := decode([]byte(doc), &ds); err == nil {
			t.Errorf("decoded as a DaemonSet: %q", doc)
		}
	}
	var pm monitoringv1.PodMonitor
	if err := decode([]byte("spec:\n  podMetricsEndpoints:\n    - port: metrics\n      intervall: 15s\n"), &pm); err == nil {
		t.Error("a misspelt PodMonitor field decoded")
	}
	var ok appsv1.DaemonSet
	if err := decode([]byte("spec:\n  minReadySeconds: 1\n"), &ok); err != nil || ok.Spec.MinReadySeconds != 1 {
		t.Errorf("a valid DaemonSet: %v, %+v", err, ok.Spec)
	}
}

// container is the DaemonSet's one container.
func (m *manifest) container(t *testing.T) *corev1.Container {
	t.Helper()
	cs := m.DaemonSet.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(m.DaemonSet.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("the DaemonSet has %d containers and %d init containers, want 1 and 0",
			len(cs), len(m.DaemonSet.Spec.Template.Spec.InitContainers))
	}
	return &cs[0]
}

// port is the container's port of that name.
func port(t *testing.T, c *corev1.Container, name string) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("the container has no port named %q", name)
	return corev1.ContainerPort{}
}

// resolve is the container port an int-or-string names.
func resolve(t *testing.T, c *corev1.Container, p intstr.IntOrString) corev1.ContainerPort {
	t.Helper()
	if p.Type == intstr.String {
		return port(t, c, p.StrVal)
	}
	for _, cp := range c.Ports {
		if cp.ContainerPort == p.IntVal {
			return cp
		}
	}
	t.Fatalf("the container has no port %d", p.IntVal)
	return corev1.ContainerPort{}
}

// listenPort is the port of a listen address in the container's environment.
func listenPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			_, p, err := net.SplitHostPort(e.Value)
			n, perr := strconv.ParseUint(p, 10, 16)
			if err != nil || perr != nil {
				t.Fatalf("%s=%q: not host:port", name, e.Value)
			}
			return int32(n)
		}
	}
	t.Fatalf("the container does not set %s", name)
	return 0
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// TestRestrictedProfile: the pod meets the "restricted" Pod Security
// profile (pod-security-admission's checks, field by field), and the
// namespace enforces it, except with the host network, which no profile
// but "privileged" admits.
func TestRestrictedProfile(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			m := render(t, v)
			pod := m.DaemonSet.Spec.Template.Spec
			psc := pod.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
				psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod security context %+v: want non-root UID 65532 and seccomp RuntimeDefault", psc)
			}
			if pod.HostPID || pod.HostIPC || len(pod.HostAliases) != 0 {
				t.Error("the pod shares the host's PID or IPC namespace")
			}
			c := m.container(t)
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Privileged != nil && *sc.Privileged ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
				len(sc.Capabilities.Add) != 0 || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
				t.Errorf("container security context %+v: want no privilege escalation, a read-only root, all capabilities dropped", sc)
			}
			for _, p := range c.Ports {
				if p.HostPort != 0 && !pod.HostNetwork {
					t.Errorf("port %s takes host port %d", p.Name, p.HostPort)
				}
			}
			for _, vol := range pod.Volumes {
				if vol.Secret == nil && vol.ConfigMap == nil && vol.EmptyDir == nil && vol.Projected == nil && vol.DownwardAPI == nil {
					t.Errorf("volume %s is of a type the restricted profile forbids", vol.Name)
				}
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken ||
				m.ServiceAccount.AutomountServiceAccountToken == nil || *m.ServiceAccount.AutomountServiceAccountToken ||
				pod.ServiceAccountName != m.ServiceAccount.Name {
				t.Error("the pod's service account, or its token, is mounted")
			}
			labels := m.Namespace.Labels
			switch want := map[bool]string{false: "restricted", true: "privileged"}[pod.HostNetwork]; {
			case pod.HostNetwork != (v == hostNetwork):
				t.Errorf("host network %v in %s", pod.HostNetwork, v)
			case labels["pod-security.kubernetes.io/enforce"] != want:
				t.Errorf("namespace enforces %q, want %q", labels["pod-security.kubernetes.io/enforce"], want)
			case pod.HostNetwork && (labels["pod-security.kubernetes.io/warn"] != "restricted" ||
				labels["pod-security.kubernetes.io/audit"] != "restricted" || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet):
				t.Errorf("host network: namespace labels %v, DNS policy %q; want warn and audit restricted, ClusterFirstWithHostNet",
					labels, pod.DNSPolicy)
			}
			if m.DaemonSet.Namespace != m.Namespace.Name {
				t.Errorf("the DaemonSet is in %q, the namespace is %q", m.DaemonSet.Namespace, m.Namespace.Name)
			}
		})
	}
}

// TestPortsAgree: the DaemonSet's ports are the addresses udpprobe listens
// on; the Service, the probes, the PodMonitor and the NetworkPolicy name
// the same ports with the same protocols, and select the DaemonSet's pods;
// the members' name is the Service's.
func TestPortsAgree(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			m := render(t, v)
			c := m.container(t)
			pod := m.DaemonSet.Spec.Template
			probe, metrics := port(t, c, "probe"), port(t, c, "metrics")
			if probe.Protocol != corev1.ProtocolUDP || probe.ContainerPort != listenPort(t, c, "UDPPROBE_LISTEN_ADDRESS") {
				t.Errorf("probe port %+v; UDPPROBE_LISTEN_ADDRESS port %d", probe, listenPort(t, c, "UDPPROBE_LISTEN_ADDRESS"))
			}
			if metrics.Protocol != corev1.ProtocolTCP || metrics.ContainerPort != listenPort(t, c, "UDPPROBE_WEB_LISTEN_ADDRESS") {
				t.Errorf("metrics port %+v; UDPPROBE_WEB_LISTEN_ADDRESS port %d", metrics, listenPort(t, c, "UDPPROBE_WEB_LISTEN_ADDRESS"))
			}
			if !labelsMatch(m.DaemonSet.Spec.Selector.MatchLabels, pod.Labels) {
				t.Error("the DaemonSet's selector does not select its pods")
			}

			// Probes: the paths the binary serves (the lab test fetches
			// them), on the metrics port.
			for _, p := range []struct {
				probe *corev1.Probe
				path  string
			}{{c.ReadinessProbe, "/-/ready"}, {c.LivenessProbe, "/-/healthy"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path ||
					resolve(t, c, p.probe.HTTPGet.Port) != metrics {
					t.Errorf("probe %+v: want GET %s on the metrics port", p.probe, p.path)
				}
			}

			// The Service: headless, both ports, the pods.
			s := m.Service.Spec
			if s.ClusterIP != corev1.ClusterIPNone || !labelsMatch(s.Selector, pod.Labels) || len(s.Ports) != 2 {
				t.Errorf("Service %+v: want headless, selecting the pods, with two ports", s)
			}
			for _, sp := range s.Ports {
				cp := resolve(t, c, sp.TargetPort)
				if cp.Name != sp.Name || cp.Protocol != sp.Protocol || cp.ContainerPort != sp.Port {
					t.Errorf("Service port %+v is not the container's %+v", sp, cp)
				}
			}
			target, family := "", ""
			for _, e := range c.Env {
				switch e.Name {
				case "UDPPROBE_TARGETS":
					target = e.Value
				case "UDPPROBE_IP_FAMILY":
					family = e.Value
				}
			}
			// Dual stack: the name answers both families, and the nodes
			// probe one.
			dual := s.IPFamilyPolicy != nil && *s.IPFamilyPolicy == corev1.IPFamilyPolicyRequireDualStack &&
				slices.Equal(s.IPFamilies, []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol})
			if dual != (v == dualStack) || (v == dualStack) != (family == "ipv6") {
				t.Errorf("Service families %v %v, UDPPROBE_IP_FAMILY %q: want dual stack and ipv6 in %s alone",
					s.IPFamilyPolicy, s.IPFamilies, family, dualStack)
			}
			if want := fmt.Sprintf("%s.$(POD_NAMESPACE).svc:%d", m.Service.Name, probe.ContainerPort); target != want {
				t.Errorf("UDPPROBE_TARGETS=%q, want %q", target, want)
			}

			// The PodMonitor: the metrics port, native histograms; without
			// the operator, the scrape job's relabelling keeps that port of
			// those pods.
			if m.PodMonitor == nil {
				checkScrapeJob(t, pod.Labels, metrics.Name)
				return
			}
			pm := m.PodMonitor.Spec
			if !labelsMatch(pm.Selector.MatchLabels, pod.Labels) || len(pm.PodMetricsEndpoints) != 1 {
				t.Fatalf("PodMonitor %+v: want one endpoint, selecting the pods", pm)
			}
			ep := pm.PodMetricsEndpoints[0]
			if ep.Port == nil || port(t, c, *ep.Port) != metrics || ep.Path != "/metrics" ||
				pm.ScrapeNativeHistograms == nil || !*pm.ScrapeNativeHistograms {
				t.Errorf("PodMonitor endpoint %+v: want /metrics on the metrics port, native histograms scraped", ep)
			}

			// The NetworkPolicy: probes in and out among the pods, the
			// metrics port from the monitoring namespace.
			np := m.NetworkPolicy
			if v == hostNetwork {
				if np != nil {
					t.Error("a NetworkPolicy for pods on the host network, which it does not apply to")
				}
				return
			}
			if np == nil || !labelsMatch(np.Spec.PodSelector.MatchLabels, pod.Labels) || len(np.Spec.Ingress) != 2 ||
				len(np.Spec.Egress) != 2 || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress", "Egress"}) {
				t.Fatalf("NetworkPolicy %+v: want ingress and egress, two rules each, selecting the pods", np)
			}
			onlyPort := func(what string, ports []networkingv1.NetworkPolicyPort, want corev1.ContainerPort) {
				if len(ports) != 1 || ports[0].Port == nil || resolve(t, c, *ports[0].Port) != want ||
					ports[0].Protocol == nil || *ports[0].Protocol != want.Protocol {
					t.Errorf("%s: ports %+v, want only %s %d", what, ports, want.Protocol, want.ContainerPort)
				}
			}
			in, out := np.Spec.Ingress, np.Spec.Egress
			if len(in[0].From) != 1 || in[0].From[0].PodSelector == nil || !labelsMatch(in[0].From[0].PodSelector.MatchLabels, pod.Labels) {
				t.Errorf("ingress %+v: want from the pods", in[0])
			}
			onlyPort("probes in", in[0].Ports, probe)
			if len(in[1].From) != 1 || in[1].From[0].NamespaceSelector == nil ||
				in[1].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
				t.Errorf("ingress %+v: want from the monitoring namespace", in[1])
			}
			onlyPort("scrapes in", in[1].Ports, metrics)
			if len(out[0].To) != 1 || out[0].To[0].PodSelector == nil || !labelsMatch(out[0].To[0].PodSelector.MatchLabels, pod.Labels) {
				t.Errorf("egress %+v: want to the pods", out[0])
			}
			onlyPort("probes out", out[0].Ports, probe)
		})
	}
}

// TestPrometheusRuleIsTheRules: the PrometheusRule, as rendered, holds
// exactly the groups of deploy/rules/udpprobe.rules.yml.
func TestPrometheusRuleIsTheRules(t *testing.T) {
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := decode(b, &want); err != nil {
		t.Fatalf("%s as a PrometheusRule's spec: %v", rulesFile, err)
	}
	n := 0
	for _, g := range want.Groups {
		n += len(g.Rules)
	}
	if n < 20 {
		t.Fatalf("%s has %d rules: not the rules file", rulesFile, n)
	}
	for _, v := range slices.DeleteFunc(slices.Clone(variants), func(v string) bool { return v == plain }) {
		if got := render(t, v).PrometheusRule.Spec; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the PrometheusRule differs from %s: run make generate", v, rulesFile)
		}
	}
	t.Logf("%d groups, %d rules", len(want.Groups), n)
}

// TestDashboardConfigMap: the dashboard ConfigMap holds the dashboard file
// and carries the label the kube-prometheus-stack Grafana sidecar loads.
func TestDashboardConfigMap(t *testing.T) {
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range slices.DeleteFunc(slices.Clone(variants), func(v string) bool { return v == plain }) {
		cm := render(t, v).ConfigMap
		if cm.Labels["grafana_dashboard"] != "1" || len(cm.Data) != 1 || cm.Data["udpprobe.json"] != string(want) {
			t.Errorf("%s: ConfigMap %s labels %v, keys %d: want grafana_dashboard=1 and udpprobe.json equal to %s",
				v, cm.Name, cm.Labels, len(cm.Data), dashboardFile)
		}
	}
}

// checkScrapeJob: deploy/kubernetes/prometheus.yml's job keeps the pods by
// the DaemonSet's labels and the port by its name.
func checkScrapeJob(t *testing.T, labels map[string]string, portName string) {
	t.Helper()
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			Relabel []struct {
				SourceLabels []string `json:"source_labels"`
				Regex        string   `json:"regex"`
				Action       string   `json:"action"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil || len(cfg.ScrapeConfigs) != 1 {
		t.Fatalf("prometheus.yml: %v, %d scrape configs", err, len(cfg.ScrapeConfigs))
	}
	meta := func(label string) string {
		return "__meta_kubernetes_pod_label_" + strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(label)
	}
	want := map[string]string{"__meta_kubernetes_pod_container_port_name": portName}
	for k, v := range labels {
		want[meta(k)] = v
	}
	for _, r := range cfg.ScrapeConfigs[0].Relabel {
		if r.Action != "keep" {
			continue
		}
		for i, v := range strings.Split(r.Regex, ";") {
			if i < len(r.SourceLabels) && want[r.SourceLabels[i]] == v {
				delete(want, r.SourceLabels[i])
			}
		}
	}
	if len(want) != 0 {
		t.Errorf("prometheus.yml keeps no target by %v", want)
	}
}

// TestHelmValues: the kube-prometheus-stack values load the dashboard
// ConfigMap by its label and carry deploy/alertmanager.yml's inhibitions.
func TestHelmValues(t *testing.T) {
	var values struct {
		Grafana struct {
			Sidecar struct {
				Dashboards struct {
					Enabled         bool   `json:"enabled"`
					Label           string `json:"label"`
					LabelValue      string `json:"labelValue"`
					SearchNamespace string `json:"searchNamespace"`
				} `json:"dashboards"`
			} `json:"sidecar"`
		} `json:"grafana"`
		Alertmanager struct {
			Config struct {
				Inhibit []any `json:"inhibit_rules"`
			} `json:"config"`
		} `json:"alertmanager"`
	}
	var am struct {
		Inhibit []any `json:"inhibit_rules"`
	}
	for path, v := range map[string]any{"kube-prometheus-stack-values.yaml": &values, "../alertmanager.yml": &am} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	cm := render(t, base).ConfigMap
	d := values.Grafana.Sidecar.Dashboards
	if !d.Enabled || cm.Labels[d.Label] != d.LabelValue || d.SearchNamespace != "ALL" {
		t.Errorf("the Grafana sidecar %+v does not load ConfigMap %s labelled %v", d, cm.Name, cm.Labels)
	}
	if len(am.Inhibit) < 5 || !reflect.DeepEqual(values.Alertmanager.Config.Inhibit, am.Inhibit) {
		t.Errorf("the values' inhibit rules are not deploy/alertmanager.yml's %d", len(am.Inhibit))
	}
}

// TestEnvironmentIsAccepted: what the DaemonSet sets is a configuration
// udpprobe mesh starts with, by the binary's own check (every UDPPROBE_*
// variable known and valid, the key file read), downward-API values filled
// in as the kubelet would.
func TestEnvironmentIsAccepted(t *testing.T) {
	bin := build(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			m := render(t, v)
			env, files := environment(t, m, "node-a")
			set := 0
			for _, kv := range env {
				if strings.HasPrefix(kv, "UDPPROBE_") {
					set++
				}
			}
			cmd := exec.Command(bin, "check", "mesh")
			cmd.Env = append(env, "PATH="+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != "udpprobe mesh: configuration OK\n" {
				t.Fatalf("udpprobe check mesh with %q: %v\n%s", env, err, out)
			}
			t.Logf("%d UDPPROBE_* variables accepted, %d files mounted", set, files)
		})
	}
}

// build compiles udpprobe from the repository's own module.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "udpprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/udpprobe")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
