package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// PathHTTPMany is POST /v1/heartbeats on the daemon's API, 1000 ids per
// request, with a worker token (the API runs Ledger.HeartbeatManyFor).
const PathHTTPMany = "http-many"

// The API measurement's fixed parts.
const (
	// apiWorker is the principal of the bench's worker token and the
	// callee_id of the rows it beats.
	apiWorker = "bench-worker"
	// apiCaller is the principal of the caller token that inserts.
	apiCaller = "bench-caller"
	// feedCaller is the caller_id of the feed latency's events.
	feedCaller = "bench-feed"
	// apiClients is the number of concurrent clients of the batch and
	// insert measurements.
	apiClients = 4
	// apiRowsMax bounds the rows the API measurement beats, so that each
	// configuration's warm-up cycle stays short.
	apiRowsMax = 100_000
	// apiDBConns is the daemon's pool (database.max_conns) during the API
	// measurement: as many statements at once as the library writers have
	// connections, plus the sweeper's and the feed listener's.
	apiDBConns = 8
	// feedConsumers long-poll the feed at once.
	feedConsumers = 4
)

// APIResult is what was measured on the daemon's HTTP API.
type APIResult struct {
	LedgerRows int `json:"ledger_rows"`
	// Rows is the number of in_progress rows the heartbeats cycle through.
	Rows int `json:"rows"`
	// Batch holds the batch heartbeat configurations in the order they
	// ran: library and HTTP in ABBA order.
	Batch []IngestRow `json:"batch"`
	// SingleRate is the requested rate of single heartbeats (requests/s);
	// Single their latency from each request's scheduled start (so a
	// late start counts against the server, open loop); SingleSent the
	// requests made, SingleAchieved the rate at which they were sent.
	SingleRate     float64       `json:"single_rate"`
	SingleDuration time.Duration `json:"single_duration"`
	SingleSent     int           `json:"single_sent"`
	SingleAchieved float64       `json:"single_achieved"`
	Single         Dist          `json:"single"`
	// SingleServer is the daemon's own time for those requests.
	SingleServer ServerTime `json:"single_server"`
	// InsertHTTP and InsertLibrary are inserts by apiClients clients,
	// closed loop: POST /v1/delegations and Ledger.Insert.
	InsertHTTP    Throughput `json:"insert_http"`
	InsertLibrary Throughput `json:"insert_library"`
	// Feed is the latency from an event's commit to the return of each
	// consumer's long poll that carries it.
	Feed          Dist `json:"feed"`
	FeedEvents    int  `json:"feed_events"`
	FeedConsumers int  `json:"feed_consumers"`
}

// Throughput is a closed-loop rate and the latency of each call.
type Throughput struct {
	Clients int     `json:"clients"`
	PerSec  float64 `json:"per_sec"`
	Latency Dist    `json:"latency"`
}

// BatchRate is the beats per second of all configurations of path together.
func (a *APIResult) BatchRate(path string) float64 {
	var beats int64
	var secs float64
	for _, row := range a.Batch {
		if row.Path == path && row.BeatsPerSec > 0 {
			beats += row.Beats
			secs += float64(row.Beats) / row.BeatsPerSec
		}
	}
	if secs == 0 {
		return 0
	}
	return float64(beats) / secs
}

// apiTarget is the daemon's API as the bench's clients see it.
type apiTarget struct {
	base   string
	client *http.Client
	worker string // tokens
	caller string
	reader string
}

func newAPITarget(base string) *apiTarget {
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}
	return &apiTarget{base: base, client: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// do sends a request with token and decodes a JSON answer of status want
// into out (when not nil).
func (a *apiTarget) do(ctx context.Context, token, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d, want %d: %.300s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// createToken makes a token with the built binary's `token create`, as an
// operator does, and returns it.
func createToken(ctx context.Context, binary, url, name, role, principal string) (string, error) {
	args := []string{"token", "create", "--name", name, "--role", role, "--output", "json"}
	if principal != "" {
		args = append(args, "--principal", principal)
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), "SWEEPER_DATABASE_URL="+url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("sweeper token create --name %s: %v: %s", name, err, stderr.String())
	}
	var line struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(out, &line); err != nil || line.Token == "" {
		return "", fmt.Errorf("sweeper token create --name %s printed no token (%v)", name, err)
	}
	return line.Token, nil
}

// measureAPI runs the built daemon with the API enabled against db and
// measures batch heartbeats over HTTP against the library in the same run,
// single-heartbeat latency at a fixed request rate, inserts and the feed's
// latency.
func measureAPI(ctx context.Context, cfg Config, db *ledgerDB) (*APIResult, error) {
	logf := db.srv.logf
	res := &APIResult{LedgerRows: db.rows, Rows: min(cfg.IngestRows, apiRowsMax)}
	if err := db.addIngestRows(ctx, res.Rows, apiWorker); err != nil {
		return res, err
	}
	defer db.dropIngestRows(ctx)

	tokens := map[string]string{}
	for _, t := range []struct{ name, role, principal string }{
		{"bench-worker", "worker", apiWorker}, {"bench-caller", "caller", apiCaller}, {"bench-reader", "reader", ""},
	} {
		tok, err := createToken(ctx, cfg.Binary, db.url, t.name, t.role, t.principal)
		if err != nil {
			return res, err
		}
		tokens[t.role] = tok
	}
	// Info logs: at debug level the daemon logs every request.
	d, err := startDaemon(cfg.Binary, db.url, "SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_LOG_LEVEL=info",
		fmt.Sprintf("SWEEPER_DATABASE_MAX_CONNS=%d", apiDBConns))
	if err != nil {
		return res, err
	}
	defer func() { _ = d.cmd.Process.Kill() }()
	addr, err := d.waitAPI(60 * time.Second)
	if err != nil {
		return res, err
	}
	api := newAPITarget("http://" + addr)
	api.worker, api.caller, api.reader = tokens["worker"], tokens["caller"], tokens["reader"]
	logf("api: daemon serves the API on %s", addr)

	// Batch heartbeats: the library and HTTP, ABBA.
	for _, path := range []string{PathMany, PathHTTPMany, PathHTTPMany, PathMany} {
		st := newIngestState(path, apiClients, res.Rows)
		st.api = api
		row, err := runIngestState(ctx, cfg, db, st)
		if err != nil {
			return res, fmt.Errorf("batch heartbeats %s: %w", path, err)
		}
		logf("api: %-9s clients=%d: %.0f beats/s p50 %s p99 %s (%.0f%% HOT)", path, apiClients, row.BeatsPerSec,
			row.Latency.P50, row.Latency.P99, 100*row.HotShare())
		res.Batch = append(res.Batch, row)
	}

	res.SingleRate, res.SingleDuration = float64(cfg.APIRate), cfg.APIDuration
	const beatRoute = "/v1/delegations/{id}/heartbeat"
	var h0 histogram
	var scrapeErr error
	lats, sent, achieved, err := openLoopBeats(ctx, api, res.Rows, cfg.APIRate, cfg.APIDuration, func() {
		h0, scrapeErr = scrapeRoute(ctx, api.client, d.metricsAddr, beatRoute)
	})
	if err == nil && scrapeErr != nil {
		err = fmt.Errorf("reading the daemon's metrics: %w", scrapeErr)
	}
	if err != nil {
		return res, fmt.Errorf("single heartbeats: %w", err)
	}
	h1, err := scrapeRoute(ctx, api.client, d.metricsAddr, beatRoute)
	if err != nil {
		return res, fmt.Errorf("reading the daemon's metrics: %w", err)
	}
	res.Single, res.SingleSent, res.SingleAchieved = dist(lats), sent, achieved
	res.SingleServer = serverTime(h0, h1)
	logf("api: single heartbeats at %d/s (sent at %.0f/s): p50 %s p99 %s max %s; server time mean %s p99 <= %s",
		cfg.APIRate, achieved, res.Single.P50, res.Single.P99, res.Single.Max, res.SingleServer.Mean, res.SingleServer.P99)

	if res.InsertLibrary, err = insertLoop(ctx, cfg.APIDuration, "lib-ins-", func(ctx context.Context, l *ledger.Ledger, id string) error {
		r, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: apiCaller, CalleeID: apiWorker,
			TaskPreview: "inserted by the bench", Actor: "bench"})
		if err == nil && r.Outcome != ledger.Inserted {
			err = fmt.Errorf("%s: %s", id, r.Outcome)
		}
		return err
	}, db); err != nil {
		return res, fmt.Errorf("library inserts: %w", err)
	}
	if res.InsertHTTP, err = insertLoop(ctx, cfg.APIDuration, "api-ins-", func(ctx context.Context, _ *ledger.Ledger, id string) error {
		body, _ := json.Marshal(map[string]string{"delegation_id": id, "callee_id": apiWorker, "task_preview": "inserted by the bench"})
		return api.do(ctx, api.caller, "POST", "/v1/delegations", body, http.StatusCreated, nil)
	}, db); err != nil {
		return res, fmt.Errorf("HTTP inserts: %w", err)
	}
	logf("api: inserts, %d clients: HTTP %.0f/s (p99 %s), library %.0f/s (p99 %s)", apiClients,
		res.InsertHTTP.PerSec, res.InsertHTTP.Latency.P99, res.InsertLibrary.PerSec, res.InsertLibrary.Latency.P99)

	res.FeedEvents, res.FeedConsumers = cfg.FeedEvents, feedConsumers
	flats, err := feedLatency(ctx, api, db, cfg.FeedEvents)
	if err != nil {
		return res, fmt.Errorf("feed latency: %w", err)
	}
	res.Feed = dist(flats)
	logf("api: feed latency (%d events, %d consumers): p50 %s p99 %s max %s", cfg.FeedEvents, feedConsumers,
		res.Feed.P50, res.Feed.P99, res.Feed.Max)
	if err := d.stop(); err != nil {
		return res, err
	}
	return res, nil
}

// postBeats is one POST /v1/heartbeats.
func (a *apiTarget) postBeats(ctx context.Context, ids []string) error {
	body, err := json.Marshal(map[string][]string{"ids": ids})
	if err != nil {
		return err
	}
	var out struct {
		NotLive []string `json:"not_live"`
	}
	if err := a.do(ctx, a.worker, "POST", "/v1/heartbeats", body, http.StatusOK, &out); err != nil {
		return err
	}
	if len(out.NotLive) > 0 {
		return fmt.Errorf("%d live rows reported not live (first %s)", len(out.NotLive), out.NotLive[0])
	}
	return nil
}

// openLoopBeats sends POST /v1/delegations/{id}/heartbeat at rate per second
// for d, each request at its scheduled time on a goroutine of its own
// whatever the answers before it (open loop), after one second of warm-up
// at the same rate. A latency runs from the scheduled start, so a request
// the client sent late counts as slow. measuring is called when the
// measured requests begin (warm-up requests may still be answered).
func openLoopBeats(ctx context.Context, a *apiTarget, rows, rate int, d time.Duration, measuring func()) (lats []time.Duration, sent int, achieved float64, err error) {
	if rate <= 0 {
		return nil, 0, 0, errors.New("the request rate must be positive")
	}
	interval := time.Second / time.Duration(rate)
	warm := int(time.Second / interval)
	total := warm + int(d/interval)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	perm := rand.Perm(rows)
	lats = make([]time.Duration, 0, total-warm)
	start := time.Now()
	var last time.Time
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if i == warm {
			measuring()
		}
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		if ctx.Err() != nil {
			return nil, 0, 0, ctx.Err()
		}
		last = time.Now()
		id := fmt.Sprintf("i%d", 1+perm[i%rows])
		wg.Go(func() {
			var out struct {
				Live bool `json:"live"`
			}
			err := a.do(ctx, a.worker, "POST", "/v1/delegations/"+id+"/heartbeat", nil, http.StatusOK, &out)
			lat := time.Since(at)
			if err == nil && !out.Live {
				err = fmt.Errorf("%s reported not live", id)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			if i >= warm {
				lats = append(lats, lat)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, 0, 0, first
	}
	sent = total - warm
	achieved = float64(sent-1) / last.Sub(start.Add(time.Duration(warm)*interval)).Seconds()
	return lats, sent, achieved, nil
}

// insertLoop runs apiClients clients inserting new delegations with ids
// prefix<n> for d, closed loop, and returns their rate and latency.
func insertLoop(ctx context.Context, d time.Duration, prefix string,
	insert func(context.Context, *ledger.Ledger, string) error, db *ledgerDB) (Throughput, error) {
	res := Throughput{Clients: apiClients}
	pcfg, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		return res, err
	}
	pcfg.MaxConns, pcfg.MinConns = apiClients, apiClients
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return res, err
	}
	l := ledger.New(pool)
	var (
		seq   atomic.Int64
		stop  atomic.Bool
		mu    sync.Mutex
		first error
		lats  []time.Duration
		wg    sync.WaitGroup
	)
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for range apiClients {
		wg.Go(func() {
			var local []time.Duration
			for !stop.Load() {
				id := fmt.Sprintf("%s%d", prefix, seq.Add(1))
				t := time.Now()
				if err := insert(ctx, l, id); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					stop.Store(true)
					break
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if first != nil {
		return res, first
	}
	res.PerSec = float64(len(lats)) / time.Since(start).Seconds()
	res.Latency = dist(lats)
	return res, nil
}

// feedLatency commits n events, one at a time, while feedConsumers
// consumers follow the feed with long polls (GET /v1/events?wait=30s),
// each from the feed's head when it started. An event's latency, for each
// consumer, runs from just before its transaction's COMMIT to the return of
// the long poll that carried it. The next event commits once every consumer
// has seen the previous one and is waiting again, after a random pause of
// 5 to 25 ms.
func feedLatency(ctx context.Context, a *apiTarget, db *ledgerDB, n int) ([]time.Duration, error) {
	head, err := ledger.New(db.pool).FeedHead(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type seen struct {
		id string
		at time.Time
	}
	seenCh := make(chan seen, 64)
	errCh := make(chan error, feedConsumers)
	var wg sync.WaitGroup
	for range feedConsumers {
		wg.Go(func() {
			after := head
			for ctx.Err() == nil {
				var page struct {
					Events []struct {
						DelegationID string `json:"delegation_id"`
					} `json:"events"`
					NextAfter int64 `json:"next_after"`
				}
				path := fmt.Sprintf("/v1/events?after=%d&caller_id=%s&wait=30s", after, feedCaller)
				err := a.do(ctx, a.reader, "GET", path, nil, http.StatusOK, &page)
				at := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						errCh <- err
					}
					return
				}
				for _, ev := range page.Events {
					select {
					case seenCh <- seen{ev.DelegationID, at}:
					case <-ctx.Done():
						return
					}
				}
				after = page.NextAfter
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	l := ledger.New(db.pool)
	var lats []time.Duration
	for i := range n {
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
		id := fmt.Sprintf("feed-%d", i)
		tx, err := db.pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := l.WithTx(tx).Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: feedCaller,
			CalleeID: apiWorker, TaskPreview: "feed latency probe", Actor: "bench"}); err != nil {
			_ = tx.Rollback(ctx)
			return nil, err
		}
		committing := time.Now()
		if err := tx.Commit(ctx); err != nil {
			return nil, err
		}
		timeout := time.After(10 * time.Second)
		for got := 0; got < feedConsumers; {
			select {
			case s := <-seenCh:
				if s.id != id {
					return nil, fmt.Errorf("a consumer got %s while waiting for %s", s.id, id)
				}
				lats = append(lats, s.at.Sub(committing))
				got++
			case err := <-errCh:
				return nil, err
			case <-timeout:
				return nil, fmt.Errorf("%d of %d consumers saw %s within 10 s", got, feedConsumers, id)
			}
		}
	}
	return lats, nil
}

// waitAPI returns the API's address from the daemon's log, once the
// metrics listener's (d.metricsAddr) has been logged too.
func (d *daemonProc) waitAPI(timeout time.Duration) (string, error) {
	expired := time.After(timeout)
	for _, ready := range []chan struct{}{d.apiReady, d.metricsReady} {
		select {
		case <-ready:
		case err := <-d.done:
			return "", fmt.Errorf("daemon exited before serving the API and metrics: %v\n%s", err, d.logTail())
		case <-expired:
			return "", fmt.Errorf("no API and metrics addresses logged within %s\n%s", timeout, d.logTail())
		}
	}
	return d.apiAddr, nil
}

// ServerTime is what the daemon's own latency histogram
// (sweeper_api_request_duration_seconds) recorded for one route over a
// measurement: time spent in the handler, without the client's queueing.
type ServerTime struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean"`
	// P50 and P99 are the upper bounds of the histogram buckets holding
	// them (0 when beyond the last bucket).
	P50 time.Duration `json:"p50_bound"`
	P99 time.Duration `json:"p99_bound"`
}

// histogram is one route's cumulative buckets, sum and count.
type histogram struct {
	buckets map[float64]float64 // le -> cumulative count
	sum     float64
	count   float64
}

var histLineRE = regexp.MustCompile(`^sweeper_api_request_duration_seconds_(bucket|sum|count)\{(.*)\} (\S+)$`)
var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// scrapeRoute reads route's latency histogram from the daemon's /metrics.
func scrapeRoute(ctx context.Context, c *http.Client, metricsAddr, route string) (histogram, error) {
	h := histogram{buckets: map[float64]float64{}}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return h, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return h, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		m := histLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		if labels["route"] != route {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return h, fmt.Errorf("metrics line %q: %w", line, err)
		}
		switch m[1] {
		case "bucket":
			le, err := strconv.ParseFloat(labels["le"], 64)
			if err != nil {
				return h, fmt.Errorf("metrics line %q: %w", line, err)
			}
			h.buckets[le] += v
		case "sum":
			h.sum += v
		case "count":
			h.count += v
		}
	}
	return h, nil
}

// serverTime is the difference of two scrapes of one route.
func serverTime(before, after histogram) ServerTime {
	n := after.count - before.count
	st := ServerTime{Count: int64(n)}
	if n <= 0 {
		return st
	}
	st.Mean = time.Duration((after.sum - before.sum) / n * float64(time.Second))
	les := make([]float64, 0, len(after.buckets))
	for le := range after.buckets {
		les = append(les, le)
	}
	slices.Sort(les)
	bound := func(q float64) time.Duration {
		for _, le := range les {
			if after.buckets[le]-before.buckets[le] >= q*n && !math.IsInf(le, 1) {
				return time.Duration(le * float64(time.Second))
			}
		}
		return 0
	}
	st.P50, st.P99 = bound(0.50), bound(0.99)
	return st
}
