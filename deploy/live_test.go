package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// The live test's timing: Prometheus scrapes and evaluates every second,
// and every alert's for: is shortened to a second in its copy of the rules.
const (
	liveInterval = "1s"
	liveFor      = "1s"
	// Grafana's $__rate_interval: four scrape intervals at least.
	liveRateInterval = "4s"
)

// liveScript is the damage the relay does to the lossy path, deterministic
// and periodic (period 400), so the loss ratio of any long enough stretch
// is the same, 11.75%: every tenth datagram and a burst of three in every
// 400 dropped, and 1% corrupted (which the receiver counts as corrupted
// and, having no good copy, lost). 2% reordered and 0.25% duplicated stay
// under their alerts' thresholds, so only the loss alert may fire.
func liveScript(i int, _ *wire.Header) impair.Action {
	switch {
	case i%10 == 9, i%400 >= 200 && i%400 < 203:
		return impair.Action{Drop: true}
	case i%100 == 33:
		return impair.Action{Corrupt: true}
	case i%50 == 21:
		return impair.Action{Hold: 2}
	case i%400 == 305:
		return impair.Action{Copies: 1}
	}
	return impair.Action{}
}

// TestLive runs the stack docker-compose.yml describes, on loopback and
// without containers: a reflecting receiver, a sender whose path goes
// through the impairment relay ("lossy") and one whose path does not
// ("clean"), Prometheus with the shipped configuration and rules (for:
// shortened, intervals 1 s), and Alertmanager with the shipped routing and
// a webhook of the test's as its receiver. It checks that the loss alert
// fires for the lossy path and reaches the webhook while the clean path
// raises nothing, that every dashboard query and variable returns data,
// that the counters Prometheus scraped equal the relay's ground truth, and
// that the recording rule's loss ratio is the injected one.
func TestLive(t *testing.T) {
	prom := testproc.Require(t, "TEST_PROMETHEUS", "`make test` builds it at the pinned version", "prometheus")
	am := testproc.Require(t, "TEST_ALERTMANAGER", "apt-get install prometheus-alertmanager",
		"prometheus-alertmanager", "alertmanager")
	bin := testproc.Build(t, "../cmd/udpprobe")
	dir := t.TempDir()
	hook := newWebhook(t)

	// The daemons and the relay.
	udp, rweb := testproc.FreeAddr(t, "udp"), testproc.FreeAddr(t, "tcp")
	rcv := testproc.Start(t, []string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + rweb,
		"UDPPROBE_LOSS_TIMEOUT=200ms", "UDPPROBE_REFLECT=true", "UDPPROBE_LOG_FORMAT=json"}, bin, "receiver")
	rcv.Await(t, `"msg":"receiving"`)
	relay, err := impair.New("127.0.0.1:0", udp, impair.Config{Script: liveScript}, impair.Config{})
	if err != nil {
		t.Fatal(err)
	}
	relay.Start()
	t.Cleanup(func() { relay.Close() })
	senders := map[string]*testproc.Process{}
	webs := []string{rweb}
	for name, target := range map[string]string{"lossy": relay.Addr(), "clean": udp} {
		web := testproc.FreeAddr(t, "tcp")
		webs = append(webs, web)
		senders[name] = testproc.Start(t, []string{"UDPPROBE_TARGETS=" + target, "UDPPROBE_WEB_LISTEN_ADDRESS=" + web,
			"UDPPROBE_NAME=" + name, "UDPPROBE_RATE=100", "UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=200ms",
			"UDPPROBE_LOG_FORMAT=json"}, bin, "sender")
	}

	// Alertmanager and Prometheus with generated copies of the shipped files.
	amWeb, promWeb := testproc.FreeAddr(t, "tcp"), testproc.FreeAddr(t, "tcp")
	writeLiveConfigs(t, dir, hook.URL, amWeb, webs)
	testproc.Start(t, nil, am, "--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amWeb, "--cluster.listen-address=")
	testproc.Start(t, nil, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promWeb)
	api := &promAPI{t: t, base: "http://" + promWeb}
	awaitReady(t, "http://"+amWeb+"/-/ready")
	awaitReady(t, "http://"+promWeb+"/-/ready")

	// The loss alert reaches the webhook; then the clean path gets a few
	// more evaluations to raise something it must not.
	critical := map[string]string{"alertname": "UDPProbePacketLossHigh", "severity": "critical", "peer": "lossy"}
	hook.await(t, critical, time.Minute)
	time.Sleep(3 * time.Second)
	for _, a := range hook.received() {
		if a["alertname"] != "UDPProbePacketLossHigh" || a["peer"] != "lossy" {
			t.Errorf("the webhook received %v; only the loss alert for the lossy path may fire", a)
		}
	}
	var alerts []string
	for _, s := range api.query(`ALERTS`) {
		alerts = append(alerts, fmt.Sprintf("%s %s %s %s", s.Metric["alertname"], s.Metric["severity"],
			s.Metric["peer"], s.Metric["alertstate"]))
	}
	slices.Sort(alerts)
	if want := []string{"UDPProbePacketLossHigh critical lossy firing", "UDPProbePacketLossHigh warning lossy firing"}; !slices.Equal(alerts, want) {
		t.Errorf("ALERTS is %q, want %q", alerts, want)
	}
	checkDashboardQueries(t, api, webs)

	// Stop the senders (each says goodbye and waits for its last replies),
	// then compare what Prometheus scraped with the relay's ground truth.
	for name, s := range senders {
		if code := s.Stop(t); code != 0 {
			t.Errorf("sender %s exited %d", name, code)
		}
	}
	delivered := relay.Delivered()
	if len(delivered) == 0 {
		t.Fatal("the relay delivered nothing")
	}
	session := slices.IndexFunc(delivered, func(d impair.Delivery) bool { return d.Valid })
	w, corrupted := impair.Truth(delivered, delivered[session].Session)
	want := map[string]float64{
		`udpprobe_receiver_packets_received_total{peer="lossy"}`:        float64(w.Received),
		`udpprobe_receiver_packets_lost_total{peer="lossy"}`:            float64(w.Lost),
		`udpprobe_receiver_packets_duplicated_total{peer="lossy"}`:      float64(w.Duplicated),
		`udpprobe_receiver_packets_reordered_total{peer="lossy"}`:       float64(w.Reordered),
		`udpprobe_receiver_loss_gap_length_packets_count{peer="lossy"}`: float64(len(w.Gaps)),
		`udpprobe_receiver_loss_gap_length_packets_sum{peer="lossy"}`:   float64(w.Lost),
		`udpprobe_receiver_reorder_extent_packets_count{peer="lossy"}`:  float64(len(w.Extents)),
		`udpprobe_receiver_packets_corrupted_total`:                     float64(corrupted),
		`udpprobe_receiver_packets_lost_total{peer="clean"}`:            0,
		`udpprobe_receiver_packets_duplicated_total{peer="clean"}`:      0,
		`udpprobe_receiver_packets_reordered_total{peer="clean"}`:       0,
	}
	if w.Lost == 0 || w.Duplicated == 0 || w.Reordered == 0 || corrupted == 0 || slices.Max(w.Gaps) < 3 {
		t.Fatalf("the relay's ground truth %+v, %d corrupted: every kind of damage should have happened", w, corrupted)
	}
	got := api.awaitValues(want, 15*time.Second)
	for q, v := range want {
		if got[q] != v {
			t.Errorf("%s = %v in Prometheus, ground truth %v", q, got[q], v)
		}
	}

	// The recording rule over a window that holds the whole run. PromQL's
	// rate leaves out what was counted before the first scrape and
	// extrapolates the two counters by different amounts (the lost counter
	// starts at 0, the received one does not), each at most half a scrape
	// interval in a run of many: a few percent of the ratio, where counting
	// one loss too many or too few in a run of about two thousand
	// datagrams would move it by far less; 10% of the injected ratio is the
	// tolerance.
	truth := float64(w.Lost) / float64(w.Lost+w.Received)
	ratio := `instance_peer:udpprobe_receiver_packets_lost:ratio_rate5m`
	byPeer := map[string]float64{}
	for _, s := range api.query(ratio) {
		byPeer[s.Metric["peer"]] = s.value(t)
	}
	if r := byPeer["lossy"]; math.Abs(r-truth) > 0.1*truth {
		t.Errorf("%s{peer=lossy} = %.4f, the relay injected %.4f (%d lost of %d)", ratio, r, truth, w.Lost, w.Lost+w.Received)
	}
	if r, ok := byPeer["clean"]; !ok || r != 0 {
		t.Errorf("%s{peer=clean} = %v (recorded: %v), want 0", ratio, r, ok)
	}
	t.Logf("loss ratio: recorded %.4f, injected %.4f; ground truth: %d received, %d lost in %d periods, %d duplicated, %d reordered, %d corrupted",
		byPeer["lossy"], truth, w.Received, w.Lost, len(w.Gaps), w.Duplicated, w.Reordered, corrupted)
}

// writeLiveConfigs writes copies of the shipped Prometheus, rule and
// Alertmanager files into dir, changed only where the test must: targets,
// intervals, for: durations and a webhook receiver. Each change must apply,
// so a reworded shipped file fails here rather than silently going untested.
func writeLiveConfigs(t *testing.T, dir, hook, amWeb string, targets []string) {
	t.Helper()
	quoted := make([]string, len(targets))
	for i, s := range targets {
		quoted[i] = strconv.Quote(s)
	}
	edit := func(src, dst string, edits ...[2]string) {
		t.Helper()
		s := string(read(t, src))
		for _, e := range edits {
			re := regexp.MustCompile(e[0])
			if !re.MatchString(s) {
				t.Fatalf("%s: no match for %s", src, e[0])
			}
			s = re.ReplaceAllString(s, e[1])
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("prometheus.yml", filepath.Join(dir, "prometheus.yml"),
		[2]string{`(?m)^(\s+(?:scrape|evaluation)_interval:) \S+`, "${1} " + liveInterval},
		[2]string{`"alertmanager:9093"`, strconv.Quote(amWeb)},
		[2]string{`\["receiver:8464", "sender:8465"\]`, "[" + strings.Join(quoted, ", ") + "]"})
	edit(rulesFile, filepath.Join(dir, rulesFile),
		[2]string{`(?m)^(\s+for:) \S+`, "${1} " + liveFor})
	edit("alertmanager.yml", filepath.Join(dir, "alertmanager.yml"),
		[2]string{`(?m)^(\s+group_(?:wait|interval):) \S+`, "${1} 1s"},
		[2]string{`(?m)^(  - name: default)$`, "${1}\n    webhook_configs:\n      - url: " + hook})
}

// checkDashboardQueries runs every dashboard query, with the variables at
// their default (All) and $__rate_interval for 1 s scrapes, and requires a
// number from each; and each variable's query must list the live values.
func checkDashboardQueries(t *testing.T, api *promAPI, webs []string) {
	t.Helper()
	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", liveRateInterval, "$job", ".*", "$instance", ".*", "$peer", ".*")
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				q := vars.Replace(tg.Expr)
				if !slices.ContainsFunc(api.query(q), func(s promSample) bool { return !math.IsNaN(s.value(t)) }) {
					t.Errorf("panel %q: %s returned no number", p.Title, q)
				}
			}
		}
	}
	walk(d.Panels)

	labelValues := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)
	want := map[string][]string{"job": {"udpprobe"}, "instance": slices.Sorted(slices.Values(webs)), "peer": {"clean", "lossy"}}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		if got := api.labelValues(m[2], vars.Replace(m[1])); !slices.Equal(got, want[v.Name]) {
			t.Errorf("variable %s lists %q, want %q", v.Name, got, want[v.Name])
		}
	}
}

// promAPI queries Prometheus's HTTP API.
type promAPI struct {
	t    *testing.T
	base string
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value(t *testing.T) float64 {
	t.Helper()
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		t.Fatalf("sample %v: %v", s, err)
	}
	return v
}

func (p *promAPI) get(path string, params url.Values, data any) {
	p.t.Helper()
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		p.t.Fatalf("%s %v: %v", path, params, err)
	}
	if body.Status != "success" {
		p.t.Fatalf("%s %v: %s", path, params, body.Error)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		p.t.Fatalf("%s %v: %v", path, params, err)
	}
}

// query runs an instant query and returns its vector.
func (p *promAPI) query(q string) []promSample {
	p.t.Helper()
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	p.get("/api/v1/query", url.Values{"query": {q}}, &data)
	if data.ResultType != "vector" {
		p.t.Fatalf("%s: a %s, want a vector", q, data.ResultType)
	}
	return data.Result
}

// labelValues is Grafana's label_values(selector, label), sorted.
func (p *promAPI) labelValues(label, selector string) []string {
	p.t.Helper()
	var values []string
	p.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {selector}}, &values)
	slices.Sort(values)
	return values
}

// awaitValues polls until every query returns one sample with the wanted
// value, or the timeout passes, and returns the last values seen (NaN for
// a query without exactly one sample).
func (p *promAPI) awaitValues(want map[string]float64, timeout time.Duration) map[string]float64 {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]float64{}
		for q := range want {
			got[q] = math.NaN()
			if r := p.query(q); len(r) == 1 {
				got[q] = r[0].value(p.t)
			}
		}
		if maps.Equal(got, want) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func awaitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// webhook is an Alertmanager webhook receiver that keeps the labels of
// every alert it is sent.
type webhook struct {
	*httptest.Server
	mu     sync.Mutex
	alerts []map[string]string
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var msg struct {
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			t.Errorf("webhook: %v", err)
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range msg.Alerts {
			if a.Status == "firing" {
				w.alerts = append(w.alerts, a.Labels)
			}
		}
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhook) received() []map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.alerts)
}

// await waits until an alert with all of labels has arrived.
func (w *webhook) await(t *testing.T, labels map[string]string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, a := range w.received() {
			if matches(a, labels) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no alert with %v reached the webhook in %v; it received %v", labels, timeout, w.received())
}

func matches(a, labels map[string]string) bool {
	for k, v := range labels {
		if a[k] != v {
			return false
		}
	}
	return true
}
