package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/lab"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestLiveMesh partitions one node of a mesh of six, each in its own
// namespace on one bridge, while Prometheus and Alertmanager run the
// shipped rules and configuration (scaled as in TestLive) in the bridge's
// hub: every pair into or out of the node reads lost, every other pair 0;
// the node alert reaches Alertmanager's receiver, and none of the alerts
// of the node's paths does, though Prometheus fires them: one broken node
// pages once.
func TestLiveMesh(t *testing.T) {
	prom := testproc.Require(t, "TEST_PROMETHEUS", "`make test` builds it at the pinned version", "prometheus")
	am := testproc.Require(t, "TEST_ALERTMANAGER", "apt-get install prometheus-alertmanager",
		"prometheus-alertmanager", "alertmanager")
	lab.Require(t, "ip", "nft")
	const nodes, broken = 6, 5
	b := lab.NewBridge(t, nodes)
	bin := testproc.Build(t, "../cmd/udpprobe")
	name := func(i int) string { return fmt.Sprintf("node-%d", i) }
	var addrs, webs []string
	for i := range nodes {
		addrs = append(addrs, b.Hosts[i].Addr)
		webs = append(webs, b.Hosts[i].Addr+":8466")
	}
	sd := filepath.Join(t.TempDir(), "members.yml")
	members := "- targets: ["
	for i, a := range addrs {
		if i > 0 {
			members += ", "
		}
		members += "'" + a + ":6464'"
	}
	if err := os.WriteFile(sd, []byte(members+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, h := range b.Hosts {
		b.Start(t, h, []string{"UDPPROBE_NAME=" + name(i), "UDPPROBE_TARGETS=file:" + sd,
			"UDPPROBE_WEB_LISTEN_ADDRESS=:8466", "UDPPROBE_RATE=100", "UDPPROBE_LOSS_TIMEOUT=200ms",
			// Namespaces of one kernel: the nodes read one clock.
			"UDPPROBE_ONE_WAY_DELAY_MAX_ERROR=off", "UDPPROBE_LOG_FORMAT=json"}, bin, "mesh").Await(t, `"msg":"serving metrics"`)
	}

	// Prometheus, Alertmanager and the webhook, all in the hub.
	ln, err := lab.Listen(b.Hub, b.Hub.Addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	hook := newWebhookOn(t, ln)
	dir := t.TempDir()
	const amWeb, promWeb = "127.0.0.1:9093", "127.0.0.1:9090"
	writeLiveConfigs(t, dir, hook.URL, amWeb, webs)
	b.Start(t, b.Hub, nil, am, "--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amWeb, "--cluster.listen-address=")
	b.Start(t, b.Hub, nil, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promWeb)
	client := lab.Client(b.Hub)
	api := &promAPI{t: t, base: "http://" + promWeb, client: client}
	awaitReadyWith(t, client, "http://"+amWeb+"/-/ready")
	awaitReadyWith(t, client, "http://"+promWeb+"/-/ready")

	// pathLoss is the 1-minute path loss (4 s here) of every pair, by
	// "sender → target".
	pathLoss := func() map[string]float64 {
		out := map[string]float64{}
		for _, s := range api.query(`sender_target:udpprobe_path_packets_lost:ratio_rate1m`) {
			out[s.Metric["sender"]+" → "+s.Metric["target"]] = s.value(t)
		}
		return out
	}
	involved := func(pair string) bool {
		return strings.HasPrefix(pair, name(broken)+" →") || strings.HasSuffix(pair, "→ "+name(broken))
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	// A clean path's ratio of two rates scraped apart is not exactly 0;
	// under 1 % is clean (the lab tests count the same paths exactly).
	await("every pair's loss is known and under 1%", func() bool {
		l := pathLoss()
		for _, v := range l {
			if v >= 0.01 {
				return false
			}
		}
		return len(l) == nodes*(nodes-1)
	})

	// The partition: the bridge drops everything between the broken node
	// and the others, both ways, as a failed link would; the hub, where
	// Prometheus runs, still reaches it.
	rules := filepath.Join(t.TempDir(), "partition.nft")
	if err := os.WriteFile(rules, []byte(fmt.Sprintf(`table bridge partition {
	chain forward { type filter hook forward priority 0; iifname "p%d" drop; oifname "p%d" drop; }
}
`, broken, broken)), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Exec(t, b.Hub, "nft", "-f", rules)

	hook.await(t, map[string]string{"alertname": "UDPProbeNodeUnreachable", "target": name(broken)}, time.Minute)
	pathAlerts := func() []string {
		var out []string
		for _, s := range api.query(`ALERTS{alertstate="firing",alertname=~"UDPProbePathDown|UDPProbePacketLossHigh|UDPProbeProberLossy"}`) {
			out = append(out, s.Metric["alertname"]+" "+s.Metric["sender"]+" → "+s.Metric["target"])
		}
		return out
	}
	// Prometheus fires the path alerts of the broken node's 10 paths (and
	// its prober alert) ...
	await("Prometheus fires the broken node's path alerts", func() bool {
		n := 0
		for _, a := range pathAlerts() {
			if strings.HasPrefix(a, "UDPProbePathDown ") {
				n++
			}
		}
		return n == 2*(nodes-1)
	})
	time.Sleep(5 * time.Second) // many group intervals (1 s here)
	// ... and Alertmanager delivers none of them.
	for _, a := range hook.received() {
		if a["alertname"] != "UDPProbeNodeUnreachable" && (a["sender"] == name(broken) || a["target"] == name(broken)) {
			t.Errorf("delivered despite the node alert: %v", a)
		}
	}
	for pair, v := range pathLoss() {
		if involved(pair) && v != 1 || !involved(pair) && v >= 0.01 {
			t.Errorf("%s: path loss %v during the partition; want 1 for the broken node's paths, under 1%% for the others", pair, v)
		}
	}
	t.Logf("firing in Prometheus: %q; delivered: %q", api.firing(), hookNames(hook.received()))
}
