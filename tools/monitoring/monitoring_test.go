// Package monitoring checks the monitoring-as-code files: the Prometheus
// alert rules and their unit tests, the scrape configurations and the Grafana
// dashboard. It has no code of its own, only this test. Every PromQL
// expression may reference only the metrics sweeper documents, every alert
// links to a runbook section that exists, and every alert has unit tests
// where it fires and where it does not. With promtool on PATH (Debian's
// prometheus package; monitoring/check.sh installs it), the rules are also
// checked and unit-tested, and the dashboard's queries parsed, by promtool.
package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/daemon"
)

// TestMain runs the tests in monitoring of the repository, where the files they
// check live: this package is in the tools module, apart from the product.
func TestMain(m *testing.M) {
	if err := os.Chdir("../../monitoring"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

const (
	alertsFile     = "prometheus/alerts.yml"
	alertTestsFile = "prometheus/alerts_test.yml"
	dashboardFile  = "grafana/sweeper-dashboard.json"
	k8sScrapeFile  = "prometheus/scrape-kubernetes.yml"
	staticConfig   = "prometheus/prometheus.example.yml"
	operationsDoc  = "../docs/operations.md"
	runbookPrefix  = "https://github.com/tasksweeper/sweeper/blob/main/docs/operations.md#"
)

// documentedMetrics are the series sweeper exports (docs/operations.md,
// "Metrics"), with the histogram's _bucket/_sum/_count series, plus
// Prometheus' own up. go_* and process_* come from the standard collectors.
var documentedMetrics = map[string]bool{
	"sweeper_runs_total":                               true,
	"sweeper_swept_total":                              true,
	"sweeper_run_duration_seconds_bucket":              true,
	"sweeper_run_duration_seconds_sum":                 true,
	"sweeper_run_duration_seconds_count":               true,
	"sweeper_last_success_timestamp_seconds":           true,
	"sweeper_batches_total":                            true,
	"sweeper_inflight_rows":                            true,
	"sweeper_oldest_heartbeat_age_seconds":             true,
	"sweeper_ready":                                    true,
	"sweeper_build_info":                               true,
	"sweeper_retention_runs_total":                     true,
	"sweeper_retention_pruned_total":                   true,
	"sweeper_retention_events_pruned_total":            true,
	"sweeper_retention_archive_bytes_total":            true,
	"sweeper_retention_last_success_timestamp_seconds": true,
	"sweeper_retention_overdue_rows":                   true,
	"sweeper_retention_overdue_seconds":                true,
	// The API's (api/metrics.go), exported when api.listen is set.
	"sweeper_api_requests_total":                  true,
	"sweeper_api_request_duration_seconds_bucket": true,
	"sweeper_api_request_duration_seconds_sum":    true,
	"sweeper_api_request_duration_seconds_count":  true,
	"sweeper_api_auth_rejected_total":             true,
	"sweeper_api_rate_limited_total":              true,
	"sweeper_api_feed_waiting":                    true,
	"sweeper_api_retries_scheduled_total":         true,
	"sweeper_api_retries_exhausted_total":         true,
	"sweeper_api_claimed_total":                   true,
	// The retry policy's (issue 21), every reason's series from the start.
	"sweeper_retries_scheduled_total": true,
	"sweeper_retries_exhausted_total": true,
	// Replica reads (internal/daemon/replica.go), always registered.
	"sweeper_read_queries_total":           true,
	"sweeper_read_replica_fallbacks_total": true,
	"sweeper_read_replica_lag_seconds":     true,
	"sweeper_read_replica_in_use":          true,
	"up":                                   true,
}

// standardCollectorMetrics are the go_/process_ series the dashboard may use.
var standardCollectorMetrics = map[string]bool{
	"go_goroutines":                 true,
	"process_resident_memory_bytes": true,
}

// requiredAlerts are the alerts issue 4 asks for.
var requiredAlerts = []string{
	"SweeperDown", "SweeperSweepsFailing", "SweeperStuckSpike",
	"SweeperOldestHeartbeatTooOld", "SweeperNotReady",
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func loadAlerts(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []rule
	for _, g := range rf.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", alertsFile)
	}
	return out
}

// githubAnchors returns the anchors GitHub generates for the markdown
// headings of path: lower case, punctuation dropped, spaces to hyphens.
func githubAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	inFence := false
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
				b.WriteRune(r)
			}
		}
		a := b.String()
		for i := 1; anchors[a]; i++ { // GitHub numbers repeated headings
			a = fmt.Sprintf("%s-%d", b.String(), i)
		}
		anchors[a] = true
	}
	return anchors
}

func TestAlertRules(t *testing.T) {
	rules := loadAlerts(t)
	anchors := githubAnchors(t, operationsDoc)
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("recording rule %q: this file holds alerts only", r.Record)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("%s: defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, sev)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookPrefix)
		if !ok {
			t.Errorf("%s: runbook_url %q does not point into docs/operations.md", r.Alert, r.Annotations["runbook_url"])
		} else if anchor != strings.ToLower(r.Alert) || !anchors[anchor] {
			t.Errorf("%s: runbook anchor #%s: want #%s, a heading in docs/operations.md", r.Alert, anchor, strings.ToLower(r.Alert))
		}
		if !strings.Contains(r.Expr, `job="sweeper"`) {
			t.Errorf("%s: expr does not select job=\"sweeper\"", r.Alert)
		}
	}
	for _, a := range requiredAlerts {
		if !seen[a] {
			t.Errorf("missing alert %s", a)
		}
	}
}

// TestEveryAlertIsUnitTested: each alert has a promtool case where it fires
// and one where it must not.
func TestEveryAlertIsUnitTested(t *testing.T) {
	data, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Tests []struct {
			Name           string `json:"name"`
			AlertRuleTests []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range tf.Tests {
		for _, a := range c.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range loadAlerts(t) {
		if !fires[r.Alert] {
			t.Errorf("%s: no unit test where it fires", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no unit test where it stays quiet", r.Alert)
		}
	}
}

var (
	// grafanaVars are Grafana's interval variables, replaced by durations.
	grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	// templateVar is a dashboard variable such as $job or ${instance}.
	templateVar   = regexp.MustCompile(`\$\{?[A-Za-z_]\w*\}?`)
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	labelMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	rangeOrOffset = regexp.MustCompile(`\[[^\]]*\]|\boffset\s+\w+`)
	groupingLists = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	identifier    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promqlWords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "offset": true, "inf": true, "nan": true}
)

// metricNames returns the metric names an expression selects: identifiers
// that are not functions, keywords, label names or string contents.
func metricNames(expr string) []string {
	e := grafanaVars.Replace(expr)
	e = stringLiteral.ReplaceAllString(e, `""`)
	e = templateVar.ReplaceAllString(e, "")
	e = labelMatchers.ReplaceAllString(e, " ")
	e = rangeOrOffset.ReplaceAllString(e, " ")
	e = groupingLists.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range identifier.FindAllStringIndex(e, -1) {
		word := e[loc[0]:loc[1]]
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // a number such as 1e3 or 0.5
		}
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promqlWords[strings.ToLower(word)] {
			continue // a function or aggregation, or a keyword
		}
		out = append(out, word)
	}
	return out
}

func TestMetricNamesParser(t *testing.T) {
	cases := map[string][]string{
		`sum by (job) (up{job="sweeper"}) == 0 or absent(up{job="sweeper"})`:                                              {"up", "up"},
		`histogram_quantile(0.99, sum by (le) (rate(sweeper_run_duration_seconds_bucket{job="$job"}[$__rate_interval])))`: {"sweeper_run_duration_seconds_bucket"},
		`time() - max(sweeper_last_success_timestamp_seconds{instance=~"$instance"}) > 9e2`:                               {"sweeper_last_success_timestamp_seconds"},
		`sweeper_ready offset 5m == bool 0`:                                                                               {"sweeper_ready"},
		`sum(rate(a_total[5m])) / on (job) group_left (version) sweeper_build_info`:                                       {"a_total", "sweeper_build_info"},
	}
	for expr, want := range cases {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

type dashboard struct {
	UID   string `json:"uid"`
	Title string `json:"title"`
	Links []struct {
		Title string `json:"title"`
		URL   string `json:"url"`
	} `json:"links"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
	Links  []struct {
		Title string `json:"title"`
		URL   string `json:"url"`
	} `json:"links"`
}

// consoleLink matches a link into the console: the $console_url variable and
// one of the console's pages (console/console.go's routes).
var consoleLink = regexp.MustCompile(`^\$\{console_url\}/(delegations|live)?(\?[a-z_]+=[a-z_]+(&[a-z_]+=[a-z_]+)*)?$`)

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// expressions returns every PromQL expression of the alerts and the
// dashboard (panel targets and variable queries), keyed by where it is.
func expressions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range loadAlerts(t) {
		out["alert "+r.Alert] = r.Expr
	}
	d := loadDashboard(t)
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %d %q %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		if m := labelValues.FindStringSubmatch(q.Query); m != nil {
			out["variable "+v.Name] = m[1]
		} else {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, q.Query)
		}
	}
	return out
}

// TestDocumentedMetricsAreExported compares the list above with what the
// daemon registers: every documented series exists, and every sweeper_*
// series the daemon exports is documented (and so may be used here).
func TestDocumentedMetricsAreExported(t *testing.T) {
	m := daemon.NewMetrics()
	// The API registers its collectors on the daemon's registry when
	// api.listen is set (internal/daemon/api.go). The pool is never
	// connected: one anonymous request, refused before any query, makes the
	// labelled series appear.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h, err := api.NewHandler(api.Options{Pool: pool, Registerer: m.Registry})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/summary", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v1/summary: %d, want 401", rec.Code)
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{"up": true}
	for _, f := range families {
		name := f.GetName()
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[name+suffix] = true
			}
		} else {
			exported[name] = true
		}
		if strings.HasPrefix(name, "sweeper_") && f.GetType() != dto.MetricType_HISTOGRAM && !documentedMetrics[name] {
			t.Errorf("the daemon exports %s, which is not documented here (and in docs/operations.md)", name)
		}
	}
	for _, m := range slices.Sorted(maps.Keys(documentedMetrics)) {
		if !exported[m] {
			t.Errorf("documented metric %s is not exported by the daemon", m)
		}
	}
	for _, m := range slices.Sorted(maps.Keys(standardCollectorMetrics)) {
		if !exported[m] {
			t.Errorf("standard collector metric %s is not exported by the daemon", m)
		}
	}
}

func TestExpressionsUseDocumentedMetrics(t *testing.T) {
	used := map[string]bool{}
	for where, expr := range expressions(t) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !documentedMetrics[n] && !standardCollectorMetrics[n] {
				t.Errorf("%s: %q is not a documented metric (expr %q)", where, n, expr)
			}
		}
	}
	// The dashboard and alerts together cover every sweeper metric.
	var missing []string
	for m := range documentedMetrics {
		if !used[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics shown nowhere: %v", missing)
	}
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "job", "instance", "console_url"} {
		if !vars[v] {
			t.Errorf("no $%s variable", v)
		}
	}
	consoleLinks := 0
	for _, l := range d.Links {
		if strings.Contains(l.URL, "console_url") {
			consoleLinks++
			if !consoleLink.MatchString(l.URL) {
				t.Errorf("dashboard link %q: %q is not a console page under ${console_url}", l.Title, l.URL)
			}
		}
	}
	if consoleLinks == 0 {
		t.Errorf("no dashboard link to the console (${console_url})")
	}
	ids := map[int]bool{}
	quantiles := 0
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		for _, l := range p.Links {
			if !consoleLink.MatchString(l.URL) {
				t.Errorf("panel %q link %q: %q is not a console page under ${console_url}", p.Title, l.Title, l.URL)
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `job="$job"`) {
				t.Errorf("panel %q %s: does not filter on job=\"$job\"", p.Title, tg.RefID)
			}
			if strings.Contains(tg.Expr, "histogram_quantile(") {
				quantiles++
			}
		}
	}
	if quantiles < 2 {
		t.Errorf("want duration quantiles via histogram_quantile, found %d", quantiles)
	}
}

// relabel applies Prometheus relabel rules (keep and replace, the ones the
// scrape config uses) to a target's labels; it returns false when dropped.
func relabel(t *testing.T, rules []map[string]any, lbls map[string]string) bool {
	t.Helper()
	for _, r := range rules {
		var src []string
		for _, s := range r["source_labels"].([]any) {
			src = append(src, lbls[s.(string)])
		}
		value := strings.Join(src, ";")
		regex := "(.*)"
		if s, ok := r["regex"].(string); ok {
			regex = s
		}
		re, err := regexp.Compile("^(?:" + regex + ")$")
		if err != nil {
			t.Fatalf("regex %q: %v", regex, err)
		}
		action, _ := r["action"].(string)
		switch action {
		case "keep":
			if !re.MatchString(value) {
				return false
			}
		case "", "replace":
			m := re.FindStringSubmatchIndex(value)
			if m == nil {
				continue
			}
			repl := "$1"
			if s, ok := r["replacement"].(string); ok {
				repl = s
			}
			lbls[r["target_label"].(string)] = string(re.ExpandString(nil, repl, value, m))
		default:
			t.Fatalf("relabel action %q not simulated", action)
		}
	}
	return true
}

// TestKubernetesScrapeConfig runs the scrape job's relabeling over pods made
// from deploy/kubernetes: the Deployment's pods are kept and scraped on
// :9090/metrics; the migrate Job's pod is not.
func TestKubernetesScrapeConfig(t *testing.T) {
	data, err := os.ReadFile(k8sScrapeFile)
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		ScrapeConfigs []struct {
			JobName        string           `json:"job_name"`
			RelabelConfigs []map[string]any `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &sc); err != nil {
		t.Fatal(err)
	}
	if len(sc.ScrapeConfigs) != 1 || sc.ScrapeConfigs[0].JobName != "sweeper" {
		t.Fatalf("want one scrape job named sweeper, have %+v", sc.ScrapeConfigs)
	}
	rules := sc.ScrapeConfigs[0].RelabelConfigs

	podLabels := func(file string, path ...string) (labels, annotations map[string]string) {
		raw, err := os.ReadFile(filepath.Join("../deploy/kubernetes/base", file))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		cur := obj
		for _, p := range path {
			cur = cur[p].(map[string]any)
		}
		meta := cur["metadata"].(map[string]any)
		conv := func(v any) map[string]string {
			out := map[string]string{}
			m, _ := v.(map[string]any)
			for k, v := range m {
				out[k] = v.(string)
			}
			return out
		}
		return conv(meta["labels"]), conv(meta["annotations"])
	}
	target := func(labels, annotations map[string]string) map[string]string {
		sanitize := regexp.MustCompile(`[^a-zA-Z0-9_]`)
		l := map[string]string{
			"__address__":                 "10.1.2.3",
			"__metrics_path__":            "/metrics",
			"__meta_kubernetes_namespace": "sweeper",
			"__meta_kubernetes_pod_name":  "sweeper-abc",
		}
		for k, v := range labels {
			l["__meta_kubernetes_pod_label_"+sanitize.ReplaceAllString(k, "_")] = v
		}
		for k, v := range annotations {
			l["__meta_kubernetes_pod_annotation_"+sanitize.ReplaceAllString(k, "_")] = v
		}
		return l
	}

	dl, da := podLabels("deployment.yaml", "spec", "template")
	// One target per container port: the API port's is dropped.
	apiTarget := target(dl, da)
	apiTarget["__address__"] = "10.1.2.3:8080"
	apiTarget["__meta_kubernetes_pod_container_port_name"] = "api"
	if relabel(t, rules, apiTarget) {
		t.Errorf("the pods' api port would be scraped as well")
	}
	l := target(dl, da)
	l["__address__"] = "10.1.2.3:9090"
	l["__meta_kubernetes_pod_container_port_name"] = "metrics"
	if !relabel(t, rules, l) {
		t.Fatalf("the Deployment's pods are dropped")
	}
	if l["__address__"] != "10.1.2.3:9090" || l["__metrics_path__"] != "/metrics" {
		t.Errorf("Deployment pod scraped at %s%s, want 10.1.2.3:9090/metrics", l["__address__"], l["__metrics_path__"])
	}
	if l["namespace"] != "sweeper" || l["pod"] != "sweeper-abc" {
		t.Errorf("namespace/pod labels: %q %q", l["namespace"], l["pod"])
	}

	jl, ja := podLabels("migrate-job.yaml", "spec", "template")
	if relabel(t, rules, target(jl, ja)) {
		t.Errorf("the migrate Job's pod would be scraped")
	}
}

// promtool runs promtool, or skips the test when it is not installed.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (apt-get install prometheus, or run monitoring/check.sh)")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolRules(t *testing.T) {
	t.Log(promtool(t, "check", "rules", alertsFile))
	t.Log(promtool(t, "test", "rules", alertTestsFile))
	t.Log(promtool(t, "check", "config", staticConfig))
}

// TestPromtoolParsesDashboard turns each dashboard query into a recording
// rule so promtool parses it as PromQL.
func TestPromtoolParsesDashboard(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not on PATH")
	}
	var rf ruleFile
	rf.Groups = append(rf.Groups, struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	}{Name: "dashboard"})
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range expressions(t) {
			if !yield(k) {
				return
			}
		}
	})
	exprs := expressions(t)
	for i, k := range keys {
		e := grafanaVars.Replace(exprs[k])
		e = templateVar.ReplaceAllString(e, "x")
		rf.Groups[0].Rules = append(rf.Groups[0].Rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: e})
	}
	data, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(promtool(t, "check", "rules", path))
}
