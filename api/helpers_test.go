package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }

// spec is the OpenAPI document, loaded once; every response a test receives
// is validated against it.
var spec = sync.OnceValues(func() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPIDocument)
	if err != nil {
		return nil, err
	}
	return doc, doc.Validate(context.Background())
})

var specRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := spec()
	if err != nil {
		return nil, err
	}
	// Route by path alone: the document's server ("/", wherever api.listen
	// is) is not the test server's host.
	routed := *doc
	routed.Servers = nil
	return legacy.NewRouter(&routed)
})

// env is one API over one test database, served on a real listener.
type env struct {
	t      *testing.T
	db     *testdb.DB
	h      *api.Handler
	srv    *httptest.Server
	l      *ledger.Ledger
	logs   *syncBuffer
	reg    *prometheus.Registry
	tokens map[string]string // token name -> token
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The tokens every env has: name -> role, principal.
var fixtureTokens = []struct {
	name      string
	role      auth.Role
	principal string
}{
	{"admin", auth.RoleAdmin, ""},
	{"reader", auth.RoleReader, ""},
	{"billing", auth.RoleCaller, "billing"},
	{"search", auth.RoleCaller, "search"},
	{"agent-a", auth.RoleWorker, "agent-a"},
	{"agent-b", auth.RoleWorker, "agent-b"},
}

func newEnv(t *testing.T, opts api.Options) *env {
	t.Helper()
	db := testdb.New(t)
	return newEnvOn(t, db, opts)
}

func newEnvOn(t *testing.T, db *testdb.DB, opts api.Options) *env {
	t.Helper()
	e := &env{t: t, db: db, l: ledger.New(db.Pool), logs: &syncBuffer{}, reg: prometheus.NewRegistry(), tokens: map[string]string{}}
	opts.Pool = db.Pool
	opts.Registerer = e.reg
	opts.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(e.logs), zapcore.DebugLevel))
	h, err := api.NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.h = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		h.Stop()
		e.srv.Close()
	})
	store := auth.NewStore(db.Pool)
	for _, ft := range fixtureTokens {
		if _, ok := e.tokens[ft.name]; ok {
			continue
		}
		tok, err := store.Create(context.Background(), ft.name, ft.role, ft.principal)
		if err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
		e.tokens[ft.name] = tok
	}
	return e
}

// resp is a response the test received, already validated against the spec.
type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %q", r.Code, r.Body)
	}
	return m
}

func (r resp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response %d: %v: %q", r.Code, err, r.Body)
	}
}

// do sends a request as the named token ("" for none) with a JSON body
// (nil for none) and validates the response against the OpenAPI document.
func (e *env) do(token, method, path string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/json"
	case string:
		rd, ct = strings.NewReader(b), "application/json"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if token != "" {
		tok, ok := e.tokens[token]
		if !ok {
			tok = token // a raw token string
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) resp {
	e.t.Helper()
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := resp{Code: res.StatusCode, Header: res.Header, Body: b}
	validate(e.t, req, r)
	return r
}

// validate checks a response against the OpenAPI document: its status is
// documented for the operation and its body matches the schema. A response
// with no operation (unknown path or method) must still be a Problem.
func validate(t *testing.T, req *http.Request, r resp) {
	t.Helper()
	doc, err := spec()
	if err != nil {
		t.Fatalf("openapi document: %v", err)
	}
	router, err := specRouter()
	if err != nil {
		t.Fatal(err)
	}
	if r.Code >= 400 {
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s %s: error %d with Content-Type %q: %q", req.Method, req.URL.Path, r.Code, ct, r.Body)
		}
		var v any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			t.Fatalf("problem is not JSON: %q", r.Body)
		}
		if err := doc.Components.Schemas["Problem"].Value.VisitJSON(v); err != nil {
			t.Fatalf("%s %s: %d body is not a Problem: %v\n%s", req.Method, req.URL.Path, r.Code, err, r.Body)
		}
	}
	vreq := req.Clone(context.Background())
	vreq.Body = http.NoBody
	route, params, err := router.FindRoute(vreq)
	if err != nil {
		if r.Code != http.StatusNotFound && r.Code != http.StatusMethodNotAllowed && r.Code != http.StatusUnauthorized {
			t.Fatalf("%s %s answered %d but has no operation in the document", req.Method, req.URL.Path, r.Code)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  r.Code,
		Header:  r.Header,
		Body:    io.NopCloser(bytes.NewReader(r.Body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("%s %s: response %d does not match the OpenAPI document: %v\n%s", req.Method, req.URL.Path, r.Code, err, r.Body)
	}
}

// seed inserts a delegation through the ledger.
func (e *env) seed(id, caller, callee string, st ledger.Status) {
	e.t.Helper()
	if _, err := e.l.Insert(context.Background(), ledger.NewDelegation{DelegationID: id, CallerID: caller, CalleeID: callee, Status: st, TaskPreview: "task " + id}); err != nil {
		e.t.Fatal(err)
	}
}

// waitForLongPoll arms the handler's test signal; the returned function
// blocks until a long poll has started waiting.
func armLongPoll(e *env) func() {
	started := make(chan struct{}, 16)
	api.SetOnWait(e.h, func() { started <- struct{}{} })
	return func() {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			e.t.Fatal("no long poll started")
		}
	}
}

// sweepOnce runs one sweep that marks one row, and returns when it started:
// its commit is later, so a delay measured from here is an upper bound.
func sweepOnce(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	s, err := sweep.New(pool, sweep.Config{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := s.RunOnce(context.Background())
	if err != nil || res.Swept != 1 {
		t.Fatalf("sweep: %+v, %v", res, err)
	}
	return start
}
