// Package deploy holds the files of the observability stack. promtool and
// amtool check the Prometheus and Alertmanager files (make check-deploy);
// these tests check the Grafana dashboard against the metrics, the rules
// and the provisioning, and the compose file, offline; and the live test
// runs the daemons, Prometheus and Alertmanager with these files.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/tracker"
)

// The dashboard fields this project writes. Decoding rejects anything else,
// so a misspelt key, or an export's "__inputs", fails the test.
type dashboard struct {
	UID           string          `json:"uid"`
	Title         string          `json:"title"`
	Description   string          `json:"description"`
	Tags          []string        `json:"tags"`
	Timezone      string          `json:"timezone"`
	Editable      bool            `json:"editable"`
	GraphTooltip  int             `json:"graphTooltip"`
	Refresh       string          `json:"refresh"`
	SchemaVersion int             `json:"schemaVersion"`
	Time          json.RawMessage `json:"time"`
	Links         json.RawMessage `json:"links"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations json.RawMessage `json:"annotations"`
	Panels      []panel         `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	Datasource *datasource     `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Refresh    int             `json:"refresh"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
	AllValue   string          `json:"allValue"`
	Current    struct {
		Selected bool `json:"selected"`
		Text     any  `json:"text"`
		Value    any  `json:"value"`
	} `json:"current"`
	Sort int `json:"sort"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Datasource  *datasource `json:"datasource"`
	GridPos     struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	// Interval is the panel's least query interval ($__interval): its
	// $__rate_interval is that and a scrape interval, at least.
	Interval    string `json:"interval"`
	FieldConfig struct {
		Defaults struct {
			Unit       string          `json:"unit"`
			Decimals   int             `json:"decimals"`
			Thresholds *thresholds     `json:"thresholds"`
			Custom     json.RawMessage `json:"custom"`
		} `json:"defaults"`
		Overrides []json.RawMessage `json:"overrides"`
	} `json:"fieldConfig"`
	Options         json.RawMessage `json:"options"`
	Transformations json.RawMessage `json:"transformations"`
	Collapsed       bool            `json:"collapsed"`
	Panels          []panel         `json:"panels"`
}

type thresholds struct {
	Mode  string `json:"mode"`
	Steps []struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	} `json:"steps"`
}

type target struct {
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Datasource   *datasource `json:"datasource"`
	RefID        string      `json:"refId"`
	Instant      bool        `json:"instant"`
	Format       string      `json:"format"`
}

const (
	dashboardFile  = "grafana/dashboards/udpprobe.json"
	datasourceFile = "grafana/provisioning/datasources/prometheus.yml"
	rulesFile      = "rules/udpprobe.rules.yml"
	dsVar          = "${datasource}"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(read(t, dashboardFile)))
	dec.DisallowUnknownFields()
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// exported is the name of every metric udpprobe exports, with a peer on
// each side so the labelled ones exist.
func exported(t *testing.T) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	metrics.NewSender(reg, "a", metrics.ClassicAndNative).Target("a:1", metrics.TargetCounts{
		Sent: func() uint64 { return 0 }, RoundTrips: func() tracker.RoundTripCounts { return tracker.RoundTripCounts{} }})
	r := metrics.NewReceiver(reg, metrics.ClassicAndNative)
	p := r.NewPeer("a", "rx:6464")
	p.Mark()     // its sender sets a traffic class,
	p.KnowHops() // and says its hop limit,
	p.Deep()     // and the depth metrics are on: every per-peer metric
	r.Export(slices.Values([]*metrics.ReceiverPeer{p}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

// known is every series name the dashboard may query: the exported metrics
// (with their histogram series), the recording rules, and Prometheus's own.
func known(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{"udpprobe_build_info": true, "ALERTS": true}
	for _, name := range exported(t) {
		names[name] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[name+s] = true
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)`).FindAllSubmatch(read(t, rulesFile), -1) {
		names[string(m[1])] = true
	}
	return names
}

// lossThresholds are the numbers the loss alerts compare the ratio with.
func lossThresholds(t *testing.T) []float64 {
	t.Helper()
	var ts []float64
	re := regexp.MustCompile(`expr: sender_target:udpprobe_path_packets_lost:ratio_rate5m > ([0-9.]+)`)
	for _, m := range re.FindAllSubmatch(read(t, rulesFile), -1) {
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, v)
	}
	slices.Sort(ts)
	if len(ts) != 2 {
		t.Fatalf("found loss thresholds %v in %s, want a warning and a critical one", ts, rulesFile)
	}
	return ts
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "udpprobe" || d.Title == "" {
		t.Errorf("uid %q, title %q", d.UID, d.Title)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	for _, name := range []string{"datasource", "job", "instance", "sender", "target"} {
		if _, ok := vars[name]; !ok {
			t.Errorf("no %q variable", name)
		}
	}
	// The datasource variable defaults to the provisioned datasource's uid.
	uid := regexp.MustCompile(`(?m)^\s*uid: (\S+)`).FindSubmatch(read(t, datasourceFile))
	if uid == nil || vars["datasource"].Current.Value != string(uid[1]) {
		t.Errorf("datasource variable defaults to %v, provisioned uid is %s", vars["datasource"].Current.Value, uid)
	}
	for _, name := range []string{"job", "instance", "sender", "target"} {
		if v := vars[name]; v.Datasource == nil || v.Datasource.UID != dsVar {
			t.Errorf("variable %s does not use %s", name, dsVar)
		}
	}

	names, limits := known(t), lossThresholds(t)
	metric := regexp.MustCompile(`\b(?:udpprobe_|sender_target:|sender_target_flow:)[a-z_:0-9]+|\bALERTS\b`)
	ranges := regexp.MustCompile(`\[[^\]]*\]`)
	bucket := regexp.MustCompile(`\b(udpprobe_[a-z_]+)_bucket\{`)
	ids := map[int]bool{}
	lossPanels := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: grid position %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != dsVar || p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: needs the %s datasource, a description and a query", p.Title, dsVar)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != dsVar || tg.RefID == "" {
				t.Errorf("panel %q: query %q lacks the datasource variable or a refId", p.Title, tg.Expr)
			}
			for _, r := range ranges.FindAllString(tg.Expr, -1) {
				if r != "[$__rate_interval]" {
					t.Errorf("panel %q: range %s, use [$__rate_interval]", p.Title, r)
				}
			}
			found := metric.FindAllString(tg.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: query %q uses no udpprobe series", p.Title, tg.Expr)
			}
			for _, name := range found {
				if !names[name] {
					t.Errorf("panel %q: %s is not a udpprobe metric or recording rule", p.Title, name)
				}
			}
			// Native histograms when scraped, classic buckets where not: a
			// query of a histogram reads both.
			for _, m := range bucket.FindAllStringSubmatch(tg.Expr, -1) {
				if !strings.Contains(tg.Expr, m[1]+"{") || !strings.Contains(tg.Expr, " or ") {
					t.Errorf("panel %q: query %q reads %s_bucket but not, beside it, the native histogram %s", p.Title, tg.Expr, m[1], m[1])
				}
			}
			if p.Type == "heatmap" && (tg.Format != "heatmap" || !strings.Contains(tg.Expr, "by (le)")) {
				t.Errorf("heatmap %q: query %q must sum by (le) in heatmap format", p.Title, tg.Expr)
			}
		}
		if strings.Contains(p.Targets[0].Expr, "sender_target:udpprobe_path_packets_lost:ratio_rate5m") {
			lossPanels++
			var got []float64
			if th := p.FieldConfig.Defaults.Thresholds; th != nil {
				for _, s := range th.Steps {
					if s.Value != nil {
						got = append(got, *s.Value)
					}
				}
			}
			if !slices.Equal(got, limits) {
				t.Errorf("panel %q: thresholds %v, the loss alerts use %v", p.Title, got, limits)
			}
		}
	}
	if lossPanels < 2 {
		t.Errorf("%d loss ratio panels, want the stat and the time series", lossPanels)
	}
}

// TestDashboardCoversMetrics: every per-path metric the receiver and sender
// export is on the dashboard somewhere, so a new metric gets a panel.
func TestDashboardCoversMetrics(t *testing.T) {
	body := string(read(t, dashboardFile))
	// Not charted on purpose: bookkeeping of the daemon itself.
	skip := map[string]string{
		"udpprobe_receiver_peers":                           "table size, in the daemon's own metrics",
		"udpprobe_sender_targets":                           "fan-out, in the daemon's own metrics",
		"udpprobe_receiver_hellos_total":                    "mesh bookkeeping: a name asked for",
		"udpprobe_receiver_hellos_answered_total":           "mesh bookkeeping: a name given",
		"udpprobe_receiver_receive_buffer_bytes":            "a setting",
		"udpprobe_receiver_one_way_delay_max_error_seconds": "a setting; the panel of delays not recorded says what it did",
		"udpprobe_receiver_peer_restarts_total":             "an event, in the logs and metrics",
		"udpprobe_receiver_sequence_resyncs_total":          "an event, in the logs and metrics",
		"udpprobe_receiver_goodbyes_total":                  "an event",
		"udpprobe_receiver_session_ended":                   "the silence alert's input: a clean stop is not an outage",
		"udpprobe_receiver_peer_overflow_packets_total":     "logged as a warning",
		"udpprobe_receiver_replies_sent_total":              "charted through the sender's replies",
		"udpprobe_receiver_replies_rate_limited_total":      "shows as downstream loss",
		"udpprobe_receiver_reply_errors_total":              "shows as downstream loss",
		"udpprobe_sender_replies_received_total":            "charted through the round-trip time",
		"udpprobe_sender_replies_late_total":                "counted in round-trip loss",
		"udpprobe_sender_replies_duplicated_total":          "rare; in the metrics",
		"udpprobe_sender_replies_invalid_total":             "rare; in the metrics",
		"udpprobe_sender_roundtrip_packets_lost_total":      "split by direction on the dashboard",
		"udpprobe_sender_schedule_lateness_seconds":         "the sender's own quality",
	}
	for _, name := range exported(t) {
		if _, ok := skip[name]; ok || strings.Contains(body, name) {
			continue
		}
		t.Errorf("%s is on no panel; chart it or list it in skip with a reason", name)
	}
}
