package main_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// otlpReceiver is an in-process OTLP/HTTP trace receiver: it decodes each
// export with the collector's protobuf types and keeps the spans.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	o := &otlpReceiver{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces of application/x-protobuf", http.StatusUnsupportedMediaType)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(o.Close)
	return o
}

// find returns the spans named name in trace traceID (hex; any when "").
func (o *otlpReceiver) find(name, traceID string) []*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range o.spans {
		if strings.HasPrefix(s.Name, name) && (traceID == "" || hex.EncodeToString(s.TraceId) == traceID) {
			out = append(out, s)
		}
	}
	return out
}

// OpenTelemetry through the binary, on with the standard variable: an
// insert carrying a traceparent stores it on the delegation; the sweep
// marks it stuck; the stuck event's webhook delivery is a span of the
// caller's trace (a child of the caller's span), and the webhook request
// carries that delivery span's own traceparent. The API request's span
// joins the caller's trace too, and sweep runs and batches have spans.
func TestTracesFollowADelegationToItsWebhook(t *testing.T) {
	t.Parallel()
	otlp := newOTLPReceiver(t)
	var mu sync.Mutex
	var hookTP []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(`"type":"delegation.stuck"`)) {
			mu.Lock()
			hookTP = append(hookTP, r.Header.Get("traceparent"))
			mu.Unlock()
		}
	}))
	t.Cleanup(hook.Close)

	srv := testdb.StartServer(t, pgserver.Options{})
	env := []string{"SWEEPER_DATABASE_URL=" + srv.URL, "SWEEPER_WEBHOOKS_ALLOW_HTTP=true", "SWEEPER_WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true"}
	if r := run(t, env, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	r := run(t, env, "token", "create", "--name", "billing", "--role", "caller", "--principal", "billing", "--output", "json")
	var tok struct{ Token string }
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &tok) != nil {
		t.Fatalf("token create: %s", r)
	}
	if r := run(t, env, "webhook", "create", "--url", hook.URL+"/h", "--events", "stuck"); r.Code != 0 {
		t.Fatalf("webhook create: %s", r)
	}
	d := testbin.StartDaemon(t, binary, "traced", append(env, "SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s",
		"SWEEPER_WEBHOOKS_POLL_INTERVAL=100ms", "OTEL_EXPORTER_OTLP_ENDPOINT="+otlp.URL, "OTEL_BSP_SCHEDULE_DELAY=200",
		"OTEL_SERVICE_NAME=sweeper-under-test"))
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address logged:\n%s", d.Logs())
	}
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const traceparent = "00-" + traceID + "-" + callerSpan + "-01"
	body := `{"delegation_id":"traced-1","callee_id":"agent","status":"in_progress","heartbeat_timeout_seconds":1}`
	req, _ := http.NewRequest("POST", "http://"+m[1]+"/v1/delegations", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	req.Header.Set("traceparent", traceparent)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("insert: %d", res.StatusCode)
	}
	pool, err := pgxpool.New(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var stored string
	if err := pool.QueryRow(context.Background(), `SELECT traceparent FROM delegations WHERE delegation_id = 'traced-1'`).Scan(&stored); err != nil || stored != traceparent {
		t.Fatalf("stored traceparent %q, %v", stored, err)
	}

	testbin.Eventually(t, 60*time.Second, "the stuck delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hookTP) > 0
	})
	mu.Lock()
	sent := hookTP[0]
	mu.Unlock()
	parts := strings.Split(sent, "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == callerSpan {
		t.Fatalf("the webhook request's traceparent %q: want the caller's trace and a span of its own", sent)
	}
	var delivery *tracepb.Span
	testbin.Eventually(t, 30*time.Second, "the delivery span exported", func() bool {
		for _, s := range otlp.find("webhook delivery stuck", traceID) {
			if hex.EncodeToString(s.SpanId) == parts[2] {
				delivery = s
				return true
			}
		}
		return false
	})
	if hex.EncodeToString(delivery.ParentSpanId) != callerSpan || delivery.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Fatalf("delivery span: parent %x kind %v, want parent %s (the caller's span)", delivery.ParentSpanId, delivery.Kind, callerSpan)
	}
	testbin.Eventually(t, 30*time.Second, "the API and sweep spans exported", func() bool {
		api := otlp.find("POST /v1/delegations", traceID)
		return len(api) == 1 && hex.EncodeToString(api[0].ParentSpanId) == callerSpan &&
			len(otlp.find("sweep run", "")) > 0 && len(otlp.find("sweep batch", "")) > 0
	})
	d.Stop(t, syscall.SIGTERM, 30*time.Second) // flushes the last spans
}
