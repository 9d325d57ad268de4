package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// The hot path measurement (issue 19, RunHotPath): at each size, a ledger on
// the latest schema and the same ledger on the schema before the hot path
// migration (version 5, migrated only that far: none of the columns of 7 to
// 9), loaded in the same run on the same server, and:
//   - the sweep's drain of a backlog on both, against the same-work limit on
//     the latest (sameWorkDrainSQL), in ABBA order, each after VACUUM
//     ANALYZE, batches of sweep.BatchSizeDefault, notifications on
//     sweep.NotifyChannelDefault;
//   - the cost of one status change through the ledger (what an API
//     transition runs) and as a raw SQL UPDATE, on both, interleaved;
//   - the nothing-eligible sweep on both;
// and at the last size, the daemon's single heartbeats over HTTP at the
// given rates (open loop) and the heartbeat ingest's HOT shares, on the
// latest.
//
// The latest ledger is driven by this build's ledger and sweep packages;
// the version 5 ledger by version 5's own statements (hotpath_v5.go), through
// version 5's triggers (its row audit and its per-statement notification on
// delegation_events), as the version 5 sweeper and API ran them.

// hotPathPrevious is the schema version before the hot path migration.
const hotPathPrevious = 5

// sameWorkDrainSQL is the drain's same-work limit: the sweep's heartbeat
// statement (its claim, UPDATE, RETURNING, counts and stuck notification
// per row) with the audit written by the statement itself, as one
// statement per batch on a session with triggers off: one event per row
// into delegation_events (with all its indexes), the same event the
// trigger writes (the detail's timeout, last progress and ages, through
// the schema's sweeper_stuck_detail; "exhausted" on a row whose policy
// ran out), and one sweeper_events notification. A row whose policy
// schedules a retry would need the next attempt too: the backlog has none,
// and the drain refuses a batch that counts one. ($1 batch size, $2
// channel, $3 timeout in seconds, $4 the sweeper's detail.)
const sameWorkDrainSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'heartbeat_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND heartbeat_timeout IS NULL
              AND heartbeat_minute >= (SELECT min(heartbeat_minute) FROM delegations
                                       WHERE status = 'in_progress' AND heartbeat_timeout IS NULL)
              AND heartbeat_minute < now() - make_interval(secs => $3)
              AND last_heartbeat < now() - make_interval(secs => $3)
            ORDER BY heartbeat_minute
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = 'in_progress' AND d.heartbeat_timeout IS NULL
           AND d.last_heartbeat < now() - make_interval(secs => $3)) IS TRUE
    RETURNING d.delegation_id, d.caller_id, d.callee_id, d.status, d.stuck_reason, d.last_heartbeat,
        d.deadline, d.attempt, d.progress, d.progress_at,
        (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt < d.max_attempts) AS retried,
        (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt >= d.max_attempts) AS exhausted
), events AS (
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail, caller_id, callee_id)
    SELECT delegation_id, 'in_progress', status, stuck_reason, 'sweeper',
           sweeper_stuck_detail($4::jsonb, progress, progress_at, last_heartbeat)
               || CASE WHEN exhausted THEN '{"exhausted": true}'::jsonb ELSE '{}'::jsonb END,
           caller_id, callee_id
    FROM swept
    RETURNING 1
)
SELECT count(*),
       count(*) FILTER (WHERE retried),
       count(*) FILTER (WHERE exhausted),
       count(CASE WHEN $2 <> '' THEN pg_notify($2, json_build_object(
           'delegation_id', delegation_id, 'caller_id', caller_id, 'callee_id', callee_id,
           'reason', stuck_reason, 'last_heartbeat', last_heartbeat, 'deadline', deadline,
           'attempt', attempt)::text) END),
       (SELECT count(*) FROM events),
       (SELECT pg_notify('sweeper_events', ''))
FROM swept`

// HotPathConfig says what RunHotPath measures.
type HotPathConfig struct {
	// Rates are the request rates of the single heartbeats over HTTP, at
	// the last size (with Config.Binary).
	Rates []int
	// Changes is the number of status changes timed per kind and schema.
	Changes int
}

// HotPathResults is what RunHotPath measured.
type HotPathResults struct {
	Started  time.Time     `json:"started"`
	Elapsed  time.Duration `json:"elapsed"`
	Machine  Machine       `json:"machine"`
	Sizes    []HotPathSize `json:"sizes"`
	Singles  []SingleBeats `json:"singles"`
	Ingest   []IngestRow   `json:"ingest"`
	Problems []string      `json:"problems"`
	Previous uint          `json:"previous_version"`
	Latest   uint          `json:"latest_version"`
	// Backlog is the rows of each drain; InFlight the live rows at every
	// size (Config's).
	Backlog  int           `json:"backlog"`
	InFlight int           `json:"in_flight"`
	Config   HotPathConfig `json:"config"`
}

// HotPathSize is one size's figures; the drains and costs are per schema.
type HotPathSize struct {
	Rows       int           `json:"rows"`
	DrainPrev  []DrainResult `json:"drain_previous"`
	Drain      []DrainResult `json:"drain"`
	Limit      []DrainResult `json:"limit"`
	NothingPre Dist          `json:"nothing_previous"`
	Nothing    Dist          `json:"nothing"`
	Changes    []ChangeCost  `json:"changes"`
	LoadAvg    []string      `json:"load_average"`
}

// ChangeCost is the latency of one status change (in_progress to
// completed, one row, its own transaction), client side.
type ChangeCost struct {
	Kind    string        `json:"kind"` // "ledger" (an API transition's statements) or "sql" (a raw UPDATE)
	Version uint          `json:"version"`
	Latency Dist          `json:"latency"`
	Mean    time.Duration `json:"mean"`
	// ServerCPU is the server's CPU time per change (its backend's, and
	// any other process of the database's at the time).
	ServerCPU time.Duration `json:"server_cpu"`
}

// SingleBeats is the single heartbeats over HTTP at one rate.
type SingleBeats struct {
	Rate     int        `json:"rate"`
	Sent     int        `json:"sent"`
	Achieved float64    `json:"achieved"`
	Latency  Dist       `json:"latency"`
	Server   ServerTime `json:"server"`
	LoadAvg  []string   `json:"load_average"`
}

// RunHotPath measures the hot path (see above) at cfg.Sizes on a server of
// its own.
func RunHotPath(ctx context.Context, cfg Config, hp HotPathConfig) (*HotPathResults, error) {
	cfg.fill()
	if hp.Changes <= 0 {
		hp.Changes = 2000
	}
	r := &HotPathResults{Started: time.Now().UTC(), Machine: describeMachine(), Previous: hotPathPrevious, Latest: migrations.Latest, Config: hp,
		Backlog: cfg.Backlog, InFlight: cfg.InFlight}
	r.Machine.LoadStart = loadAverage()
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	r.Machine.PGVersion, r.Machine.ServerKind, r.Machine.DataDir = srv.version, srv.kind, srv.dataDir
	problem := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		cfg.Logf("PROBLEM: %s", msg)
		r.Problems = append(r.Problems, msg)
	}
	for i, n := range cfg.Sizes {
		last := i == len(cfg.Sizes)-1
		if err := hotPathSize(ctx, cfg, hp, srv, n, last, r, problem); err != nil {
			return r, err
		}
	}
	r.Machine.LoadEnd = loadAverage()
	r.Elapsed = time.Since(r.Started)
	return r, nil
}

func hotPathSize(ctx context.Context, cfg Config, hp HotPathConfig, srv *server, n int, last bool, r *HotPathResults, problem func(string, ...any)) error {
	prev, err := srv.loadLedgerAt(ctx, cfg, n, hotPathPrevious)
	if err != nil {
		return fmt.Errorf("loading %d rows at version %d: %w", n, hotPathPrevious, err)
	}
	defer prev.drop(ctx)
	if err := checkV5Ledger(ctx, prev); err != nil {
		return err
	}
	cur, err := srv.loadLedger(ctx, cfg, n)
	if err != nil {
		return fmt.Errorf("loading %d rows: %w", n, err)
	}
	defer cur.drop(ctx)
	sr := HotPathSize{Rows: n}
	dbs := []*ledgerDB{prev, cur}
	// The live rows with a heartbeat timeout of their own stay live.
	keepers := make([]*keeper, 2)
	for i, db := range dbs {
		if keepers[i], err = startKeeper(ctx, db, cfg.InFlight); err != nil {
			return fmt.Errorf("beating the live rows at %d rows: %w", n, err)
		}
		defer keepers[i].Stop()
	}
	// The same sweep configuration on both: version 5's sweeper on the
	// version 5 ledger, this build's on the latest.
	sweepCfg := sweep.Config{
		HeartbeatTimeout: benchTimeout,
		BatchSize:        sweep.BatchSizeDefault,
		MaxBatchesPerRun: cfg.Backlog/sweep.BatchSizeDefault + 10,
		NotifyChannel:    sweep.NotifyChannelDefault,
	}
	sweepers := make([]sweepRunner, 2)
	for i, db := range dbs {
		pool, err := db.newPool(ctx, 4)
		if err != nil {
			return err
		}
		defer pool.Close()
		if i == 0 {
			sweepers[i] = newV5Sweeper(pool, sweepCfg)
			continue
		}
		if sweepers[i], err = sweep.New(pool, sweepCfg); err != nil {
			return err
		}
	}
	logf := srv.logf

	// Nothing eligible, every live row just beaten, on both schemas.
	for i, db := range dbs {
		if err := beatAll(ctx, db, cfg.InFlight); err != nil {
			return err
		}
		times := make([]time.Duration, 0, cfg.SweepRuns)
		for k := range cfg.SweepRuns + 3 {
			res, err := sweepers[i].RunOnce(ctx)
			if err != nil {
				return err
			}
			if res.Swept != 0 {
				return fmt.Errorf("nothing-eligible run swept %d rows", res.Swept)
			}
			if k >= 3 {
				times = append(times, res.Duration)
			}
		}
		if i == 0 {
			sr.NothingPre = dist(times)
		} else {
			sr.Nothing = dist(times)
		}
		logf("%d rows, %s: nothing eligible p50 %s p95 %s", n, versionName(i), dist(times).P50, dist(times).P95)
	}

	// Status changes, interleaved in rounds of 100 so that drift and load
	// fall on both schemas alike.
	if err := statusChanges(ctx, dbs, hp.Changes, &sr); err != nil {
		problem("status changes at %d rows: %v", n, err)
	}

	// The drains: previous schema, latest, same-work limit, in ABBA order.
	for _, db := range dbs {
		lis, err := listen(ctx, db.url, nil)
		if err != nil {
			return err
		}
		defer lis.close()
		db.lis = lis
	}
	shapes := map[int]string{} // the events of the latest's drain (1) and of the limit (2)
	for round := range cfg.DrainRounds {
		order := []int{0, 1, 2}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, kind := range order {
			db := dbs[min(kind, 1)]
			prefix, err := db.addStale(ctx, cfg.Backlog, true)
			if err != nil {
				return err
			}
			var d DrainResult
			var name string
			cpu0 := db.serverCPU(ctx)
			switch kind {
			case 0, 1:
				name = "sweep, " + versionName(kind)
				d, err = sweepDrain(ctx, db, sweepers[kind], db.lis)
			default:
				name = "same-work limit, " + versionName(1)
				d, err = sameWorkDrain(ctx, db)
			}
			if err != nil {
				problem("drain (%s) at %d rows: %v", name, n, err)
				continue
			}
			d.ServerCPU = db.serverCPU(ctx).sub(cpu0)
			if d.Rows != cfg.Backlog {
				problem("drain (%s) at %d rows marked %d rows, want %d", name, n, d.Rows, cfg.Backlog)
				continue
			}
			if kind > 0 {
				shape, err := db.eventShapes(ctx, prefix)
				if err != nil {
					return err
				}
				shapes[kind] = shape
				if shapes[1] != "" && shapes[2] != "" && shapes[1] != shapes[2] {
					problem("at %d rows the same-work limit wrote other events than the drain: %q, drain %q", n, shapes[2], shapes[1])
				}
			}
			switch kind {
			case 0:
				sr.DrainPrev = append(sr.DrainPrev, d)
			case 1:
				sr.Drain = append(sr.Drain, d)
			default:
				sr.Limit = append(sr.Limit, d)
			}
			logf("%d rows: drain (%s) %d rows in %s: %.0f rows/s, server CPU %.1f µs/row (load %v)", n, name, d.Rows,
				d.Duration.Round(time.Millisecond), d.Rate(), cpuPerRow([]DrainResult{d}), loadAverage())
		}
	}
	sr.LoadAvg = loadAverage()
	if len(sr.Drain) > 0 && len(sr.DrainPrev) > 0 && len(sr.Limit) > 0 {
		logf("%d rows: drain %.0f rows/s, previous schema %.0f rows/s (%.2fx), same-work limit %.0f rows/s (%.2f)", n,
			rate(sr.Drain), rate(sr.DrainPrev), rate(sr.Drain)/rate(sr.DrainPrev), rate(sr.Limit), rate(sr.Drain)/rate(sr.Limit))
		logf("%d rows: server CPU per row: drain %.1f µs, previous schema %.1f µs (%.2fx), same-work limit %.1f µs (%.2f)", n,
			cpuPerRow(sr.Drain), cpuPerRow(sr.DrainPrev), cpuPerRow(sr.DrainPrev)/cpuPerRow(sr.Drain),
			cpuPerRow(sr.Limit), cpuPerRow(sr.Limit)/cpuPerRow(sr.Drain))
	}
	r.Sizes = append(r.Sizes, sr)
	if !last {
		return nil
	}

	keep := keepers[1]
	keep.Pause()
	if rows, err := measureIngest(ctx, cfg, cur); err != nil {
		problem("heartbeat ingest at %d rows: %v", n, err)
	} else {
		r.Ingest = rows
	}
	if err := keep.Resume(ctx); err != nil {
		return err
	}
	if cfg.Binary != "" && len(hp.Rates) > 0 {
		singles, batch, err := measureSingles(ctx, cfg, cur, hp.Rates)
		if err != nil {
			problem("single heartbeats at %d rows: %v", n, err)
		}
		r.Singles = singles
		r.Ingest = append(r.Ingest, batch...)
	}
	return nil
}

func versionName(i int) string {
	if i == 0 {
		return fmt.Sprintf("version %d", hotPathPrevious)
	}
	return fmt.Sprintf("latest (version %d)", migrations.Latest)
}

// statusChanges times hp.Changes status changes per kind and schema: rows
// inserted in_progress (triggers off), then each moved to completed in its
// own transaction, through the ledger (what POST
// /v1/delegations/{id}/transitions runs: this build's Ledger.SetStatus on
// the latest, version 5's statements on version 5) or a raw UPDATE that sets
// only the status (the BEFORE trigger then sets updated_at).
func statusChanges(ctx context.Context, dbs []*ledgerDB, changes int, sr *HotPathSize) error {
	kinds := []string{"ledger", "sql"}
	lat := map[string][]time.Duration{}
	cpu := map[string]time.Duration{}
	prefixes := map[string]string{}
	for v, db := range dbs {
		for _, k := range kinds {
			p, err := db.addLive(ctx, changes)
			if err != nil {
				return err
			}
			prefixes[fmt.Sprint(v, k)] = p
		}
	}
	const round = 100
	for start := 0; start < changes; start += round {
		for v, db := range dbs {
			l := ledger.New(db.pool)
			for _, k := range kinds {
				p := prefixes[fmt.Sprint(v, k)]
				cpu0 := db.serverCPU(ctx)
				for i := start + 1; i <= min(start+round, changes); i++ {
					id := fmt.Sprintf("%s%d", p, i)
					t0 := time.Now()
					switch k {
					case "ledger":
						if v == 0 {
							applied, err := v5SetStatus(ctx, db.pool, id, string(ledger.StatusCompleted), "api:bench")
							if err != nil {
								return err
							}
							if !applied {
								return fmt.Errorf("%s: not applied at version %d", id, hotPathPrevious)
							}
							break
						}
						res, err := l.SetStatus(ctx, id, ledger.StatusCompleted, ledger.Change{Actor: "api:bench"})
						if err != nil {
							return err
						}
						if res.Outcome != ledger.OutcomeApplied {
							return fmt.Errorf("%s: %s", id, res.Outcome)
						}
					default:
						tag, err := db.pool.Exec(ctx, `UPDATE delegations SET status = 'completed' WHERE delegation_id = $1`, id)
						if err != nil {
							return err
						}
						if tag.RowsAffected() != 1 {
							return fmt.Errorf("%s: %d rows", id, tag.RowsAffected())
						}
					}
					key := fmt.Sprint(v, k)
					lat[key] = append(lat[key], time.Since(t0))
				}
				cpu[fmt.Sprint(v, k)] += db.serverCPU(ctx).sub(cpu0)
			}
		}
	}
	for v := range dbs {
		for _, k := range kinds {
			ls := lat[fmt.Sprint(v, k)]
			var sum time.Duration
			for _, d := range ls {
				sum += d
			}
			c := ChangeCost{Kind: k, Version: uint(hotPathPrevious), Latency: dist(ls), Mean: sum / time.Duration(max(len(ls), 1)),
				ServerCPU: cpu[fmt.Sprint(v, k)] / time.Duration(max(len(ls), 1))}
			if v == 1 {
				c.Version = migrations.Latest
			}
			sr.Changes = append(sr.Changes, c)
			dbs[v].srv.logf("%d rows, %s: status change (%s) mean %s p50 %s p99 %s, server CPU %s per change", dbs[v].rows, versionName(v), k,
				c.Mean.Round(time.Microsecond), c.Latency.P50, c.Latency.P99, c.ServerCPU)
		}
	}
	// Each schema's audit: one event per change.
	for v, db := range dbs {
		for _, k := range kinds {
			p := prefixes[fmt.Sprint(v, k)]
			got, err := db.count(ctx, `SELECT count(*) FROM delegation_events WHERE delegation_id LIKE $1 || '%' AND to_status = 'completed'`, p)
			if err != nil {
				return err
			}
			if got != changes {
				return fmt.Errorf("%s, %s: %d completed events for %d changes", versionName(v), k, got, changes)
			}
		}
	}
	return nil
}

// addLive inserts n live in_progress rows (triggers off, no events) and
// returns their id prefix.
func (db *ledgerDB) addLive(ctx context.Context, n int) (string, error) {
	db.seq++
	prefix := fmt.Sprintf("c%d-", db.seq)
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	for _, st := range []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline)
		SELECT '%s' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89), 'status change ' || g, 'in_progress',
		       now(), now() + interval '6 hours'
		FROM generate_series(1, %d) g`, prefix, n),
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
	} {
		if _, err := conn.Exec(ctx, st); err != nil {
			return "", fmt.Errorf("adding live rows: %w", err)
		}
	}
	return prefix, nil
}

// eventShapesSQL describes the audit events of the rows whose ids start
// with $1, one line per distinct shape: who wrote it, the move, the reason
// and the detail without its ages (which differ from row to row). The
// same-work limit must write what the sweep's drain wrote.
const eventShapesSQL = `
SELECT COALESCE(string_agg(DISTINCT concat_ws(' ', actor, from_status, to_status, reason,
           (detail - 'heartbeat_age_seconds' - 'progress_age_seconds')::text,
           (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(detail) AS k)), E'\n'), '')
FROM delegation_events WHERE delegation_id LIKE $1 || '%'`

// eventShapes is eventShapesSQL for the rows of prefix.
func (db *ledgerDB) eventShapes(ctx context.Context, prefix string) (string, error) {
	var s string
	err := db.pool.QueryRow(ctx, eventShapesSQL, prefix).Scan(&s)
	return s, err
}

// sameWorkDrain drains the backlog with sameWorkDrainSQL, triggers off.
func sameWorkDrain(ctx context.Context, db *ledgerDB) (DrainResult, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return DrainResult{}, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		return DrainResult{}, err
	}
	defer func() { _, _ = conn.Exec(ctx, `SET session_replication_role = DEFAULT`) }()
	detail, err := json.Marshal(map[string]any{"heartbeat_timeout_seconds": benchTimeout.Seconds()})
	if err != nil {
		return DrainResult{}, err
	}
	notes0 := db.lis.count.Load()
	var d DrainResult
	start := time.Now()
	for {
		var rows, retried, exhausted, notified, events int
		var one string
		if err := conn.QueryRow(ctx, sameWorkDrainSQL, sweep.BatchSizeDefault, sweep.NotifyChannelDefault,
			benchTimeout.Seconds(), string(detail)).Scan(&rows, &retried, &exhausted, &notified, &events, &one); err != nil {
			return d, err
		}
		if notified != rows || events != rows {
			return d, fmt.Errorf("batch of %d rows: %d notifications, %d events", rows, notified, events)
		}
		if retried != 0 {
			return d, fmt.Errorf("batch of %d rows: %d rows whose policy schedules a retry, which the limit does not insert", rows, retried)
		}
		d.Batches++
		d.Rows += rows
		d.Events += events
		if rows < sweep.BatchSizeDefault {
			break
		}
	}
	d.Duration = time.Since(start)
	d.Notified = int(db.lis.waitCount(notes0+int64(d.Rows)) - notes0)
	return d, nil
}

// measureSingles runs the daemon's API on db and sends single heartbeats at
// each rate, open loop (as measureAPI does at Config.APIRate), then one
// round of batch heartbeats over HTTP and through the library for their
// HOT shares.
func measureSingles(ctx context.Context, cfg Config, db *ledgerDB, rates []int) ([]SingleBeats, []IngestRow, error) {
	logf := db.srv.logf
	rows := min(cfg.IngestRows, apiRowsMax)
	if err := db.addIngestRows(ctx, rows, apiWorker); err != nil {
		return nil, nil, err
	}
	defer db.dropIngestRows(ctx)
	worker, err := createToken(ctx, cfg.Binary, db.url, "bench-worker", "worker", apiWorker)
	if err != nil {
		return nil, nil, err
	}
	d, err := startDaemon(cfg.Binary, db.url, "SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_LOG_LEVEL=info",
		fmt.Sprintf("SWEEPER_DATABASE_MAX_CONNS=%d", apiDBConns))
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = d.cmd.Process.Kill() }()
	addr, err := d.waitAPI(60 * time.Second)
	if err != nil {
		return nil, nil, err
	}
	api := newAPITarget("http://" + addr)
	api.worker = worker
	var out []SingleBeats
	const beatRoute = "/v1/delegations/{id}/heartbeat"
	for _, rate := range rates {
		var h0 histogram
		var scrapeErr error
		lats, sent, achieved, err := openLoopBeats(ctx, api, rows, rate, cfg.APIDuration, func() {
			h0, scrapeErr = scrapeRoute(ctx, api.client, d.metricsAddr, beatRoute)
		})
		if err == nil {
			err = scrapeErr
		}
		if err != nil {
			return out, nil, fmt.Errorf("single heartbeats at %d/s: %w", rate, err)
		}
		h1, err := scrapeRoute(ctx, api.client, d.metricsAddr, beatRoute)
		if err != nil {
			return out, nil, err
		}
		s := SingleBeats{Rate: rate, Sent: sent, Achieved: achieved, Latency: dist(lats), Server: serverTime(h0, h1), LoadAvg: loadAverage()}
		out = append(out, s)
		logf("api: single heartbeats at %d/s (sent at %.0f/s): p50 %s p99 %s max %s; server time mean %s (load %v)",
			rate, achieved, s.Latency.P50, s.Latency.P99, s.Latency.Max, s.Server.Mean, s.LoadAvg)
	}
	var batch []IngestRow
	for _, path := range []string{PathHTTPMany, PathMany} {
		// Each path starts on a vacuumed table: the single beats above
		// leave the rows' pages full of dead versions, and the first path
		// after them would otherwise pay for pruning them (its HOT share
		// fell to 88% at 1M where the second path's was 99%).
		if err := db.vacuum(ctx, path); err != nil {
			return out, batch, err
		}
		st := newIngestState(path, apiClients, rows)
		st.api = api
		row, err := runIngestState(ctx, cfg, db, st)
		if err != nil {
			return out, batch, fmt.Errorf("batch heartbeats %s: %w", path, err)
		}
		logf("api: %-9s clients=%d: %.0f beats/s (%.0f%% HOT)", path, apiClients, row.BeatsPerSec, 100*row.HotShare())
		batch = append(batch, row)
	}
	return out, batch, d.stop()
}

// cpuTimes is the CPU time of each server process of a database, by pid.
type cpuTimes map[int]time.Duration

// serverCPU reads the CPU time (user + system) of every server process
// connected to db's database (backends, autovacuum workers), from /proc.
// On a server it cannot read, it is empty: one that is not a local process
// (in a container, pg_stat_activity's pids are the container's).
func (db *ledgerDB) serverCPU(ctx context.Context) cpuTimes {
	out := cpuTimes{}
	if db.srv.kind != string(pgserver.KindLocal) {
		return out
	}
	rows, err := db.srv.admin.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1`, db.name)
	if err != nil {
		return out
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return out
	}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces): state is 3,
		// utime 14 and stime 15.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[int(pid)] = time.Duration(ut+st) * time.Second / clockTicks
	}
	return out
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

// sub is the CPU time spent since before: by processes in both, the
// difference; by processes that started since, all of it. (A process that
// ended in between is lost: the drains keep their connections.)
func (after cpuTimes) sub(before cpuTimes) time.Duration {
	var d time.Duration
	for pid, t := range after {
		d += t - before[pid]
	}
	return d
}

// cpuPerRow is the server CPU per marked row of drains, in microseconds.
func cpuPerRow(ds []DrainResult) float64 {
	var cpu time.Duration
	var rows int
	for _, d := range ds {
		cpu += d.ServerCPU
		rows += d.Rows
	}
	if rows == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(rows)
}
