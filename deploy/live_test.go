package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// The live test's timing: Prometheus scrapes and evaluates every second,
// fifteen times as often as the stack does, and every window, for: and
// silence threshold of the rules is divided by fifteen with it
// (liveScale), so the alerts keep their timing table's shape.
const (
	liveInterval = "1s"
	liveScale    = 15
	// Grafana's $__rate_interval: four scrape intervals at least.
	liveRateInterval = "4s"
	// The receiver forgets a silent sender after this.
	livePeerExpiry = 5 * time.Second
)

// liveScript is the damage the relay does to the lossy path, deterministic
// and periodic (period 400), so the loss ratio of any long enough stretch
// is the same, 11.75%: every tenth datagram and a burst of three in every
// 400 dropped, and 1% corrupted (which the receiver counts as corrupted
// and, having no good copy, lost). 2% reordered and 0.25% duplicated stay
// under their alerts' thresholds, so only the loss alerts may fire.
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
// without containers: a reflecting receiver; three senders, with round
// trips, whose paths are "lossy" (through a relay that damages 11.75%),
// "steady" (through one that drops 3%, then everything) and "clean";
// Prometheus with the shipped configuration and rules (scaled down in
// time) and native histograms scraped; and Alertmanager with the shipped
// routing and a webhook of the test's as its receiver. In turn:
//
//  1. the loss alerts fire for lossy (critical) and steady (warning only)
//     and reach the webhook, and nothing else fires; every dashboard query
//     and variable returns data; a blackout of 90 s (scaled) on steady's
//     path pages critical;
//  2. steady's relay drops everything: UDPProbePathDown fires for that path
//     and only that one, and every dashboard loss query for it reads 1;
//  3. clean's sender stops cleanly: nothing pages for it;
//  4. steady's sender is killed: UDPProbePeerSilent and UDPProbeTargetDown
//     fire for it, and the silence alert goes on past the peer's expiry;
//  5. lossy's sender stops, and the counters Prometheus scraped equal the
//     relay's ground truth, and the recorded loss ratios the injected one.
func TestLive(t *testing.T) {
	prom := testproc.Require(t, "TEST_PROMETHEUS", "`make test` builds it at the pinned version", "prometheus")
	am := testproc.Require(t, "TEST_ALERTMANAGER", "apt-get install prometheus-alertmanager",
		"prometheus-alertmanager", "alertmanager")
	bin := testproc.Build(t, "../cmd/udpprobe")
	dir := t.TempDir()
	hook := newWebhook(t)

	// The daemons and the relays.
	udp, rweb := testproc.FreeAddr(t, "udp"), testproc.FreeAddr(t, "tcp")
	rcv := testproc.Start(t, []string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + rweb,
		"UDPPROBE_LOSS_TIMEOUT=200ms", "UDPPROBE_REFLECT=true", "UDPPROBE_PEER_EXPIRY=" + livePeerExpiry.String(),
		// As in docker-compose.yml: every daemon reads this one kernel's clock.
		"UDPPROBE_ONE_WAY_DELAY_MAX_ERROR=off", "UDPPROBE_LOG_FORMAT=json"}, bin, "receiver")
	rcv.Await(t, `"msg":"receiving"`)
	var blackout atomic.Bool
	relays := map[string]impair.Config{
		"lossy": {Script: liveScript},
		"steady": {Script: func(i int, _ *wire.Header) impair.Action {
			return impair.Action{Drop: blackout.Load() || i%100 < 3}
		}},
	}
	targets := map[string]string{"clean": udp}
	var lossy *impair.Relay
	for name, cfg := range relays {
		relay, err := impair.New("127.0.0.1:0", udp, cfg, impair.Config{})
		if err != nil {
			t.Fatal(err)
		}
		relay.Start()
		t.Cleanup(func() { relay.Close() })
		targets[name] = relay.Addr()
		if name == "lossy" {
			lossy = relay
		}
	}
	senders := map[string]*testproc.Process{}
	webs, senderWeb := []string{rweb}, map[string]string{}
	for name, target := range targets {
		web := testproc.FreeAddr(t, "tcp")
		webs, senderWeb[name] = append(webs, web), web
		// The clean path is probed from two flows, so that the per-flow
		// series and the flow panel have data.
		flows := map[bool]string{true: "2", false: "1"}[name == "clean"]
		senders[name] = testproc.Start(t, []string{"UDPPROBE_TARGETS=" + target, "UDPPROBE_WEB_LISTEN_ADDRESS=" + web,
			"UDPPROBE_NAME=" + name, "UDPPROBE_RATE=100", "UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=200ms",
			"UDPPROBE_FLOWS=" + flows,
			"UDPPROBE_LOG_FORMAT=json", "UDPPROBE_CLASSIC_HISTOGRAMS=" + strconv.FormatBool(name != nativeOnly)}, bin, "sender")
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

	// 1. Steady loss: lossy pages critical, steady warns; nothing else.
	hook.await(t, map[string]string{"alertname": "UDPProbePacketLossHigh", "severity": "critical", "sender": "lossy"}, time.Minute)
	hook.await(t, map[string]string{"alertname": "UDPProbePacketLossHigh", "severity": "warning", "sender": "steady"}, time.Minute)
	time.Sleep(3 * time.Second)
	loss := []string{
		"UDPProbePacketLossHigh critical lossy", "UDPProbePacketLossHigh warning lossy",
		"UDPProbePacketLossHigh warning steady",
		"UDPProbeRoundTripLossHigh critical lossy", "UDPProbeRoundTripLossHigh warning lossy",
		"UDPProbeRoundTripLossHigh warning steady",
	}
	if got := api.firing(); !slices.Equal(got, loss) {
		t.Errorf("firing: %q, want %q", got, loss)
	}
	checkDashboardQueries(t, api, webs, targets)
	checkNativeOnly(t, api)
	for _, smp := range api.query(`sender_target:udpprobe_receiver_packets_lost:ratio_rate5m{sender="clean"}`) {
		if v := smp.value(t); v != 0 {
			t.Errorf("the clean path's recorded loss ratio is %v", v)
		}
	}

	// A blackout of 90 s, scaled: the loss alert pages critical for that
	// path (at 2m15s in the timing table, 9 s here, and for 4m).
	blackout.Store(true)
	time.Sleep(90 * time.Second / liveScale)
	blackout.Store(false)
	hook.await(t, map[string]string{"alertname": "UDPProbePacketLossHigh", "severity": "critical", "sender": "steady"}, time.Minute)

	// 2. A blackout on steady's path until further notice: it reads down,
	// and only it.
	blackout.Store(true)
	hook.await(t, map[string]string{"alertname": "UDPProbePathDown", "sender": "steady", "target": targets["steady"]}, time.Minute)
	path := strings.NewReplacer("$__rate_interval", liveRateInterval, "$job", ".*", "$instance", ".*",
		"$sender", "steady", "$target", strings.ReplaceAll(regexp.QuoteMeta(targets["steady"]), `\`, `\\`))
	awaitLoss := func(q string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			r := api.query(q)
			if len(r) == 1 && r[0].value(t) == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("during the blackout %s = %v, want one sample of 1", q, r)
				return
			}
		}
	}
	for _, q := range lossQueries(t) {
		awaitLoss(path.Replace(q))
	}
	for _, a := range api.firing() {
		if !slices.Contains(loss, a) && !strings.HasSuffix(a, " steady") {
			t.Errorf("during steady's blackout %q fires", a)
		}
	}

	// 3. A clean stop pages nobody: two silence thresholds and the
	// target-down wait pass with clean gone.
	if code := senders["clean"].Stop(t); code != 0 {
		t.Errorf("sender clean exited %d", code)
	}
	time.Sleep(15 * time.Second)
	for _, a := range append(api.firing(), hookNames(hook.received())...) {
		if strings.HasSuffix(a, " clean") || strings.Contains(a, senderWeb["clean"]) {
			t.Errorf("a clean stop paged: %q", a)
		}
	}

	// 4. steady's sender dies: its silence and its scrape page, and the
	// silence alert outlives the receiver's memory of it.
	if err := senders["steady"].Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	hook.await(t, map[string]string{"alertname": "UDPProbeTargetDown", "instance": senderWeb["steady"]}, time.Minute)
	hook.await(t, map[string]string{"alertname": "UDPProbePeerSilent", "sender": "steady"}, time.Minute)
	rcv.Await(t, `"msg":"peer expired`)
	time.Sleep(livePeerExpiry)
	if !slices.Contains(api.firing(), "UDPProbePeerSilent critical steady") {
		t.Errorf("UDPProbePeerSilent stopped for the dead sender after the receiver forgot it: firing %q", api.firing())
	}

	// 5. Stop lossy (it says goodbye and waits for its last replies), then
	// compare what Prometheus scraped with the relay's ground truth.
	if code := senders["lossy"].Stop(t); code != 0 {
		t.Errorf("sender lossy exited %d", code)
	}
	delivered := lossy.Delivered()
	if len(delivered) == 0 {
		t.Fatal("the relay delivered nothing")
	}
	session := slices.IndexFunc(delivered, func(d impair.Delivery) bool { return d.Valid })
	w, corrupted := impair.Truth(delivered, delivered[session].Session)
	// The receiver forgets a sender livePeerExpiry after its goodbye, so
	// the last value of each series is read.
	at := func(sender string) string {
		return fmt.Sprintf(`{sender=%q,target=%q}[5m])`, sender, targets[sender])
	}
	want := map[string]float64{
		`last_over_time(udpprobe_receiver_packets_received_total` + at("lossy"):        float64(w.Received),
		`last_over_time(udpprobe_receiver_packets_lost_total` + at("lossy"):            float64(w.Lost),
		`last_over_time(udpprobe_receiver_packets_duplicated_total` + at("lossy"):      float64(w.Duplicated),
		`last_over_time(udpprobe_receiver_packets_reordered_total` + at("lossy"):       float64(w.Reordered),
		`last_over_time(udpprobe_receiver_loss_gap_length_packets_count` + at("lossy"): float64(len(w.Gaps)),
		`last_over_time(udpprobe_receiver_loss_gap_length_packets_sum` + at("lossy"):   float64(w.Lost),
		`last_over_time(udpprobe_receiver_reorder_extent_packets_count` + at("lossy"):  float64(len(w.Extents)),
		`udpprobe_receiver_packets_corrupted_total`:                                    float64(corrupted),
		`last_over_time(udpprobe_receiver_packets_lost_total` + at("clean"):            0,
		`last_over_time(udpprobe_receiver_packets_duplicated_total` + at("clean"):      0,
		`last_over_time(udpprobe_receiver_packets_reordered_total` + at("clean"):       0,
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

	// The receiver's recorded loss ratio, its last value: over the scaled
	// 20 s window, periodic damage gives the injected ratio. PromQL's rate
	// extrapolates the two counters by different amounts, each at most
	// half a scrape interval in a window of twenty: a few percent of the
	// ratio, where counting one loss too many or too few would move it by
	// far less; 10% of the injected ratio is the tolerance.
	truth := float64(w.Lost) / float64(w.Lost+w.Received)
	ratio := `last_over_time(sender_target:udpprobe_receiver_packets_lost:ratio_rate5m[5m])`
	bySender := map[string]float64{}
	for _, s := range api.query(ratio) {
		bySender[s.Metric["sender"]] = s.value(t)
	}
	if r := bySender["lossy"]; math.Abs(r-truth) > 0.1*truth {
		t.Errorf("%s{sender=lossy} = %.4f, the relay injected %.4f (%d lost of %d)", ratio, r, truth, w.Lost, w.Lost+w.Received)
	}
	t.Logf("loss ratio: recorded %.4f, injected %.4f; ground truth: %d received, %d lost in %d periods, %d duplicated, %d reordered, %d corrupted",
		bySender["lossy"], truth, w.Received, w.Lost, len(w.Gaps), w.Duplicated, w.Reordered, corrupted)
}

// hookNames are the webhook's alerts as firing writes them.
func hookNames(alerts []map[string]string) []string {
	var names []string
	for _, a := range alerts {
		names = append(names, strings.Join([]string{a["alertname"], a["severity"], a["sender"], a["instance"]}, " "))
	}
	return names
}

// writeLiveConfigs writes copies of the shipped Prometheus, rule and
// Alertmanager files into dir, changed only where the test must: targets,
// intervals, every duration of the rules divided by liveScale, and a
// webhook receiver. Each change must apply, so a
// reworded shipped file fails here rather than silently going untested.
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
			if e[1] == "scale" {
				s = re.ReplaceAllStringFunc(s, func(m string) string { return scaled(t, re, m) })
				continue
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
		[2]string{`(?m)(for: )(\d+)([smhd])$`, "scale"},
		[2]string{`(\[)(\d+)([smhd])(\])`, "scale"},
		[2]string{`(offset )(\d+)([smhd])()`, "scale"},
		[2]string{`(?m)^(\s+interval: )(\d+)([smhd])()$`, "scale"},
		[2]string{`(> )(60)()( *\n)`, "scale"})
	edit("alertmanager.yml", filepath.Join(dir, "alertmanager.yml"),
		[2]string{`(?m)^(\s+group_(?:wait|interval):) \S+`, "${1} 1s"},
		[2]string{`(?m)^(  - name: default)$`, "${1}\n    webhook_configs:\n      - url: " + hook})
}

// scaled rewrites the match m of re, whose groups are a prefix, a number,
// a unit (s, m, h, d or none: seconds) and a suffix, with the duration
// divided by liveScale, in seconds.
func scaled(t *testing.T, re *regexp.Regexp, m string) string {
	t.Helper()
	g := re.FindStringSubmatch(m)
	n, err := strconv.Atoi(g[2])
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]int{"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[g[3]]
	secs := n * unit / liveScale
	if secs*liveScale != n*unit {
		t.Fatalf("%q does not divide by %d", m, liveScale)
	}
	suffix := ""
	if len(g) > 4 {
		suffix = g[4]
	}
	if g[3] == "" {
		return g[1] + strconv.Itoa(secs) + suffix
	}
	return g[1] + strconv.Itoa(secs) + "s" + suffix
}

// lossQueries are the dashboard's queries of a path's loss ratio.
func lossQueries(t *testing.T) []string {
	t.Helper()
	var qs []string
	// Exported only for peers whose sender sets a traffic class: the live
	// stack's relays send with their own (none), so a marked sender would
	// be counted remarked on every datagram. TestTrafficClassMarks (the
	// namespace lab) counts them against nftables; the dashboard test
	// checks the names.
	unmarked := regexp.MustCompile(`udpprobe_receiver_packets_(remarked|ce_marked|ecn_bleached)_total`)
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				if unmarked.MatchString(tg.Expr) {
					t.Logf("panel %q: not queried live: %s needs a sender that sets a traffic class", p.Title,
						unmarked.FindString(tg.Expr))
					continue
				}
				// A path's loss, not one flow's: the path down reads 1 on
				// every one of these.
				if strings.Contains(tg.Expr, "packets_lost:ratio") && !strings.Contains(tg.Expr, "flow_packets_lost") {
					qs = append(qs, tg.Expr)
				}
			}
		}
	}
	walk(loadDashboard(t).Panels)
	if len(qs) < 2 {
		t.Fatalf("%d loss queries on the dashboard", len(qs))
	}
	return qs
}

// nativeOnly is the sender of TestLive whose histograms are native only.
const nativeOnly = "steady"

// checkNativeOnly: the sender exposing native histograms only has no
// classic buckets in Prometheus, and every dashboard query of its
// histograms reads a number for it all the same.
func checkNativeOnly(t *testing.T, api *promAPI) {
	t.Helper()
	if got := api.query(`udpprobe_sender_rtt_seconds_bucket{sender="` + nativeOnly + `"}`); len(got) != 0 {
		t.Errorf("%d classic bucket series of a native-only sender", len(got))
	}
	vars := strings.NewReplacer("$__rate_interval", liveRateInterval, "$job", ".*", "$instance", ".*",
		"$sender", nativeOnly, "$target", ".*")
	n := 0
	// Exported only for peers whose sender sets a traffic class: the live
	// stack's relays send with their own (none), so a marked sender would
	// be counted remarked on every datagram. TestTrafficClassMarks (the
	// namespace lab) counts them against nftables; the dashboard test
	// checks the names.
	unmarked := regexp.MustCompile(`udpprobe_receiver_packets_(remarked|ce_marked|ecn_bleached)_total`)
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				if unmarked.MatchString(tg.Expr) {
					t.Logf("panel %q: not queried live: %s needs a sender that sets a traffic class", p.Title,
						unmarked.FindString(tg.Expr))
					continue
				}
				if !strings.Contains(tg.Expr, "udpprobe_sender_rtt_seconds_bucket{") {
					continue
				}
				n++
				q := vars.Replace(tg.Expr)
				if !slices.ContainsFunc(api.query(q), func(s promSample) bool { return !math.IsNaN(s.value(t)) }) {
					t.Errorf("panel %q: %s returned no number for the native-only sender", p.Title, q)
				}
			}
		}
	}
	walk(loadDashboard(t).Panels)
	if n == 0 {
		t.Error("no dashboard query reads the round-trip time histogram")
	}
}

// rateInterval is Grafana's $__rate_interval for panel p in the live
// stack: its least interval and a scrape interval, and at least
// liveRateInterval. A panel that sets one reads what is observed only so
// often (PDV, as each 10 s interval ends), at the daemon's pace, which the
// live test does not scale.
func rateInterval(t *testing.T, p panel) string {
	t.Helper()
	least, err := time.ParseDuration(liveRateInterval)
	if err != nil {
		t.Fatal(err)
	}
	if p.Interval == "" {
		return liveRateInterval
	}
	d, err := time.ParseDuration(p.Interval)
	if err != nil {
		t.Fatalf("panel %q: interval %q: %v", p.Title, p.Interval, err)
	}
	return max(d+time.Second, least).String()
}

// histogramHalves splits a query that reads a histogram into the query of
// its native form and that of its classic buckets, the two sides of its
// "or"; a query of anything else gives none.
func histogramHalves(q string) []string {
	if !strings.Contains(q, "_bucket{") {
		return nil
	}
	native, classic, ok := strings.Cut(q, " or on () ")
	if !ok {
		native, classic, _ = strings.Cut(q, " or ")
	}
	return []string{native, classic}
}

// checkDashboardQueries runs every dashboard query, with the variables at
// their default (All) and $__rate_interval for 1 s scrapes, and requires a
// number from each; and each variable's query must list the live values.
func checkDashboardQueries(t *testing.T, api *promAPI, webs []string, targets map[string]string) {
	t.Helper()
	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", liveRateInterval, "$job", ".*", "$instance", ".*",
		"$sender", ".*", "$target", ".*")
	// Exported only for peers whose sender sets a traffic class: the live
	// stack's relays send with their own (none), so a marked sender would
	// be counted remarked on every datagram. TestTrafficClassMarks (the
	// namespace lab) counts them against nftables; the dashboard test
	// checks the names.
	unmarked := regexp.MustCompile(`udpprobe_receiver_packets_(remarked|ce_marked|ecn_bleached)_total`)
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				if unmarked.MatchString(tg.Expr) {
					t.Logf("panel %q: not queried live: %s needs a sender that sets a traffic class", p.Title,
						unmarked.FindString(tg.Expr))
					continue
				}
				// A histogram's query reads the native histogram or, where
				// there is none, the classic buckets: each half must work.
				q := vars.Replace(strings.ReplaceAll(tg.Expr, "$__rate_interval", rateInterval(t, p)))
				for _, q := range append([]string{q}, histogramHalves(q)...) {
					if !slices.ContainsFunc(api.query(q), func(s promSample) bool { return !math.IsNaN(s.value(t)) }) {
						t.Errorf("panel %q: %s returned no number", p.Title, q)
					}
				}
			}
		}
	}
	walk(d.Panels)

	labelValues := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)
	want := map[string][]string{"job": {"udpprobe"}, "instance": slices.Sorted(slices.Values(webs)),
		"sender": slices.Sorted(maps.Keys(targets)), "target": slices.Sorted(maps.Values(targets))}
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
	t      *testing.T
	base   string
	client *http.Client // nil: http.DefaultClient
}

// promSample is one sample of a query's result: a number, or a native
// histogram, whose value is its count.
type promSample struct {
	Metric    map[string]string `json:"metric"`
	Value     [2]any            `json:"value"`
	Histogram [2]any            `json:"histogram"`
}

func (s promSample) value(t *testing.T) float64 {
	t.Helper()
	str, _ := s.Value[1].(string)
	if h, ok := s.Histogram[1].(map[string]any); ok {
		str, _ = h["count"].(string)
	}
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		t.Fatalf("sample %v: %v", s, err)
	}
	return v
}

func (p *promAPI) get(path string, params url.Values, data any) {
	p.t.Helper()
	client := p.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(p.base + path + "?" + params.Encode())
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

// firing lists the firing alerts, each as "alertname severity sender" (the
// instance for an alert without a sender), sorted.
func (p *promAPI) firing() []string {
	p.t.Helper()
	var alerts []string
	for _, s := range p.query(`ALERTS{alertstate="firing"}`) {
		who := s.Metric["sender"]
		if who == "" {
			who = s.Metric["instance"]
		}
		alerts = append(alerts, strings.Join([]string{s.Metric["alertname"], s.Metric["severity"], who}, " "))
	}
	slices.Sort(alerts)
	return alerts
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

func awaitReady(t *testing.T, url string) { awaitReadyWith(t, http.DefaultClient, url) }

// awaitReadyWith is awaitReady through client.
func awaitReadyWith(t *testing.T, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
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

func newWebhook(t *testing.T) *webhook { return newWebhookOn(t, nil) }

// newWebhookOn is newWebhook serving on ln (nil: on loopback).
func newWebhookOn(t *testing.T, ln net.Listener) *webhook {
	w := &webhook{}
	w.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
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
	if ln != nil {
		w.Listener.Close()
		w.Listener = ln
	}
	w.Start()
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
