package kubernetes

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/lab"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// secrets are what the tests put in the Secrets the manifests mount: the
// key the hmac overlay's instructions create.
var secrets = map[string]map[string]string{
	"udpprobe-hmac": {"key": "a lab key, 32 bytes and no more\n"},
}

// environment is the container's environment as the kubelet would give it
// on node: downward-API values filled in, $(VAR) references expanded. The
// Secret volumes are written to a temporary folder, and a value that names
// a path under a mount names the same path there; files is how many were
// written.
func environment(t *testing.T, m *manifest, node string) (env []string, files int) {
	t.Helper()
	c := m.container(t)
	mounts := map[string]string{} // mount path: the folder standing in for it
	for _, vm := range c.VolumeMounts {
		for _, vol := range m.DaemonSet.Spec.Template.Spec.Volumes {
			if vol.Name != vm.Name {
				continue
			}
			if vol.Secret == nil {
				t.Fatalf("volume %s: only Secret volumes are filled in", vol.Name)
			}
			data, ok := secrets[vol.Secret.SecretName]
			if !ok {
				t.Fatalf("no test data for Secret %s", vol.Secret.SecretName)
			}
			dir := t.TempDir()
			for k, v := range data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o440); err != nil {
					t.Fatal(err)
				}
				files++
			}
			mounts[vm.MountPath] = dir
		}
	}
	vars := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		switch f := e.ValueFrom; {
		case f == nil:
			val = expand(val, vars)
		case f.FieldRef != nil && f.FieldRef.FieldPath == "spec.nodeName":
			val = node
		case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.namespace":
			val = m.DaemonSet.Namespace
		case f.ResourceFieldRef != nil && f.ResourceFieldRef.Resource == "limits.memory":
			val = strconv.FormatInt(c.Resources.Limits.Memory().Value(), 10)
		default:
			t.Fatalf("%s: a value source the test does not fill in: %+v", e.Name, f)
		}
		for path, dir := range mounts {
			if rest, ok := strings.CutPrefix(val, path+"/"); ok {
				val = filepath.Join(dir, rest)
			}
		}
		vars[e.Name] = val
		env = append(env, e.Name+"="+val)
	}
	return env, files
}

var reference = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(NAME) with the value of a variable defined before it,
// and $$ with $, as the kubelet does; a reference to an unknown variable
// stays as it is.
func expand(s string, vars map[string]string) string {
	return reference.ReplaceAllStringFunc(s, func(r string) string {
		if r == "$$" {
			return "$"
		}
		if v, ok := vars[r[2:len(r)-1]]; ok {
			return v
		}
		return r
	})
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"NS": "udpprobe"}
	for in, want := range map[string]string{
		"udpprobe.$(NS).svc:6464": "udpprobe.udpprobe.svc:6464",
		"$$(NS)":                  "$(NS)",
		"$(OTHER)-$(NS)":          "$(OTHER)-udpprobe",
		"$NS":                     "$NS",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// The lab's nodes, as Kubernetes nodes would be named.
func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// TestDaemonSetInLab runs the DaemonSet's container as it would run on a
// cluster of 6 nodes, the base's and the hmac overlay's: each node in a
// network namespace of its own on one bridge, the headless Service's name
// answered by the lab's DNS with every node's address, and the environment
// exactly as rendered, nothing added. Every node becomes ready at the
// readiness probe's path and port, is healthy at the liveness probe's,
// probes the five others under their node names, and every one of the 30
// pairs is exact once the nodes stop. The dual-stack overlay's cluster
// has both families, the Service's name answering an A and an AAAA
// record for every pod: each node probes each other once, over IPv6.
func TestDaemonSetInLab(t *testing.T) {
	lab.Require(t, "ip")
	bin := build(t)
	for _, v := range []string{base, hmac, dualStack} {
		t.Run(v, func(t *testing.T) {
			t.Parallel() // separate namespaces; most of the time is waiting
			newBridge := lab.NewBridge
			if v == dualStack {
				newBridge = lab.NewBridge46
			}
			runCluster(t, bin, render(t, v), newBridge(t, 6))
		})
	}
}

func runCluster(t *testing.T, bin string, m *manifest, b *lab.Bridge) {
	n := len(b.Hosts)
	c := m.container(t)
	metrics := port(t, c, "metrics").ContainerPort
	var addrs []netip.Addr
	for i := range n {
		addrs = append(addrs, b.Addrs(i)...)
	}
	b.DNS.Set(fmt.Sprintf("%s.%s.svc", m.Service.Name, m.Namespace.Name), addrs...)
	nodes := make([]*testproc.Process, n)
	for i, h := range b.Hosts {
		env, _ := environment(t, m, nodeName(i))
		nodes[i] = b.Start(t, h, env, bin, c.Args...)
	}
	url := func(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", metrics, path) }
	status := func(i int, path string) int {
		resp, err := lab.Client(b.Hosts[i]).Get(url(path))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	start := time.Now()
	for i := range n {
		for status(i, c.ReadinessProbe.HTTPGet.Path) != http.StatusOK {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s not ready at %s after 20 s", nodeName(i), url(c.ReadinessProbe.HTTPGet.Path))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s := status(i, c.LivenessProbe.HTTPGet.Path); s != http.StatusOK {
			t.Fatalf("%s: %s answers %d", nodeName(i), url(c.LivenessProbe.HTTPGet.Path), s)
		}
	}
	samples := func(i int) scrape.Samples {
		s, err := scrape.Parse(strings.NewReader(b.Get(t, b.Hosts[i], url("/metrics"))))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	probes := func(s scrape.Samples, i, j int) bool {
		_, ok := s[scrape.Series("udpprobe_sender_packets_sent_total", "sender", nodeName(i), "target", nodeName(j))]
		return ok
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		all := true
		for i := range n {
			s := samples(i)
			for j := range n {
				all = all && (i == j || probes(s, i, j))
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after 20 s not every node probes every other by its node name")
		}
	}
	t.Logf("every node probes the %d others by name %v after they started", n-1, time.Since(start).Round(100*time.Millisecond))
	time.Sleep(5 * time.Second) // about 50 datagrams a pair at the default 10/s
	intrude(t, b, bin, m, samples)

	// The name answers with node 0 alone: at their next resolve (the
	// DaemonSet's interval, 30 s by default) the others leave each other
	// with goodbyes, and node 0, which never probes itself, leaves all.
	b.DNS.Set(fmt.Sprintf("%s.%s.svc", m.Service.Name, m.Namespace.Name), b.Addrs(0)...)
	left := time.Now()
	for deadline := left.Add(45 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		alone := true
		for i := range n {
			s := samples(i)
			for j := 1; j < n; j++ {
				alone = alone && !probes(s, i, j)
			}
		}
		if alone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("45 s after the name lost them, nodes still probe nodes 1 to 5")
		}
	}
	t.Logf("the nodes left every node but node 0 %v after the name stopped answering with them",
		time.Since(left).Round(100*time.Millisecond))
	time.Sleep(time.Second) // the goodbyes' streams settle (loss timeout 3 s: none waits for it)
	exact := func(s scrape.Samples, i, j int) {
		t.Helper()
		sent, sessions, err := lab.Sent(nodes[i].Lines(), nodeName(j))
		if err != nil {
			t.Fatal(err)
		}
		c := func(name string) uint64 {
			return uint64(s[scrape.Series("udpprobe_receiver_"+name, "sender", nodeName(i), "target", nodeName(j))])
		}
		if sessions != 1 || sent == 0 || c("packets_received_total") != sent || c("packets_lost_total") != 0 ||
			c("packets_duplicated_total") != 0 || c("packets_reordered_total") != 0 || c("packets_late_total") != 0 ||
			c("packets_stray_total") != 0 || c("session_ended") != 1 {
			t.Errorf("%s → %s: sent %d in %d sessions; received %d, lost %d, duplicated %d, reordered %d, late %d, stray %d, ended %d",
				nodeName(i), nodeName(j), sent, sessions, c("packets_received_total"), c("packets_lost_total"),
				c("packets_duplicated_total"), c("packets_reordered_total"), c("packets_late_total"),
				c("packets_stray_total"), c("session_ended"))
		}
	}
	pairs := 0
	for j := 1; j < n; j++ {
		s := samples(j)
		for i := range n {
			if i != j {
				exact(s, i, j)
				pairs++
			}
		}
	}
	// Then nodes 1 to 5 stop, as pods do in a rollout: their goodbyes end
	// their streams to node 0.
	for i := 1; i < n; i++ {
		if code := nodes[i].Stop(t); code != 0 {
			t.Fatalf("%s exited %d", nodeName(i), code)
		}
	}
	time.Sleep(time.Second)
	s := samples(0)
	for i := 1; i < n; i++ {
		exact(s, i, 0)
		pairs++
	}
	if pairs != n*(n-1) {
		t.Fatalf("%d pairs checked, want %d", pairs, n*(n-1))
	}
	// Each node probed each other once, over IPv6 where the pods have
	// both families, unless the DaemonSet says IPv4.
	env, _ := environment(t, m, nodeName(0))
	v6 := len(b.Addrs6) > 0 && !slices.Contains(env, "UDPPROBE_IP_FAMILY=ipv4")
	for i := range n {
		if err := lab.ProbedOnce(nodes[i].Lines(), n-1, v6); err != nil {
			t.Errorf("%s: %v", nodeName(i), err)
		}
	}
	t.Logf("all %d pairs exact, each probed once, over IPv6: %v", pairs, v6)
}

// intrude sends node 0 a second's probes from a sender that holds no key,
// from host 1: the hmac overlay's node refuses all of them as
// unauthenticated, the base's counts them as a peer's.
func intrude(t *testing.T, b *lab.Bridge, bin string, m *manifest, samples func(int) scrape.Samples) {
	t.Helper()
	env, _ := environment(t, m, nodeName(0))
	keyed := slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "UDPPROBE_HMAC_KEY_FILE=") })
	p := b.Start(t, b.Hosts[1], []string{"UDPPROBE_NAME=intruder", "UDPPROBE_TARGETS=" + b.Hosts[0].Addr + ":6464",
		"UDPPROBE_RATE=50", "UDPPROBE_WEB_LISTEN_ADDRESS=127.0.0.1:8499", "UDPPROBE_LOG_FORMAT=json"}, bin, "sender")
	p.Await(t, `"msg":"sending"`)
	time.Sleep(time.Second)
	if code := p.Stop(t); code != 0 {
		t.Fatalf("the intruding sender exited %d", code)
	}
	time.Sleep(200 * time.Millisecond)
	s := samples(0)
	got, _ := s.Sum("udpprobe_receiver_packets_received_total", "sender", "intruder")
	refused, _ := s.Sum("udpprobe_receiver_invalid_packets_total", "reason", "auth")
	t.Logf("node 0 received %v datagrams from a sender without the key and refused %v as unauthenticated", got, refused)
	if keyed && (got != 0 || refused < 40) || !keyed && (got < 40 || refused != 0) {
		t.Fatalf("with a key %v: node 0 received %v from a sender without one and refused %v", keyed, got, refused)
	}
}
