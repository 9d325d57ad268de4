package console

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// scope is what part of the ledger a principal reads: one caller's rows,
// one callee's rows, or everything.
type scope struct {
	CallerID string
	CalleeID string
}

func scopeOf(p auth.Principal) scope {
	switch p.Role {
	case auth.RoleCaller:
		return scope{CallerID: p.ID}
	case auth.RoleWorker:
		return scope{CalleeID: p.ID}
	}
	return scope{}
}

// stuckReasons are the reasons the sweep gives, in display order.
var stuckReasons = []string{sweep.ReasonHeartbeatTimeout, sweep.ReasonDeadlineExceeded,
	sweep.ReasonStalled, sweep.ReasonQueueTimeout, sweep.ReasonStartTimeout}

// overview is what the overview page shows.
type overview struct {
	Now      time.Time
	InFlight int64
	ByStatus []statusCount
	ByCaller []callerCount
	// Stuck counts by reason over the last hour and day.
	StuckHour map[string]int64
	StuckDay  map[string]int64
	// Chart is the stuck transitions per minute over the last six hours,
	// oldest first.
	Chart           []int64
	ChartStart      time.Time
	OldestHeartbeat *time.Time
	NextDeadline    *time.Time
	// NextDue is when the next in-flight row becomes eligible for a sweep
	// (the earlier of the oldest heartbeat plus the timeout and the
	// earliest deadline); nil when nothing is in flight.
	NextDue       *time.Time
	NextDueReason string
	// Retries counts the later attempts created (by a retry policy or by
	// hand) and Exhausted the attempts that used the last retry their
	// policy allowed, over the last hour and day.
	RetriesHour, RetriesDay     int64
	ExhaustedHour, ExhaustedDay int64
}

type statusCount struct {
	Status ledger.Status
	N      int64
}

type callerCount struct {
	CallerID string
	InFlight int64
	ByStatus []statusCount
}

// chartMinutes is the span of the overview's chart.
const chartMinutes = 6 * 60

// overview reads the overview of sc. Its four parts (the in-flight counts,
// the oldest heartbeat and next deadline, the stuck counts of the last day,
// the retries and exhausted attempts of the last day)
// are independent: they run at once, each on a connection of its own from
// h.reads (a pool or a replica router, safe for concurrent use), so the page
// costs its slowest part, not their sum. The first error cancels the others.
func (h *Handler) overview(ctx context.Context, sc scope) (overview, error) {
	var o overview
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg             sync.WaitGroup
		errs           [4]error
		counts         []inFlightRow
		stuck          []stuckRow
		stuckNow       time.Time
		oldest, nextDL *time.Time
	)
	run := func(i int, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = f(); errs[i] != nil {
				cancel()
			}
		}()
	}
	run(0, func() (err error) {
		counts, err = h.inFlightCounts(ctx, sc)
		return err
	})
	run(1, func() error {
		if err := h.reads.QueryRow(ctx, dueSQL, sc.CallerID, sc.CalleeID).Scan(&o.Now, &oldest, &nextDL); err != nil {
			return fmt.Errorf("reading the oldest heartbeat and next deadline: %w", err)
		}
		return nil
	})
	run(2, func() (err error) {
		stuckNow, stuck, err = h.stuckOfDay(ctx, sc)
		return err
	})
	run(3, func() error {
		if err := h.reads.QueryRow(ctx, retriesSinceSQL, sc.CallerID, sc.CalleeID).Scan(&o.RetriesHour, &o.RetriesDay); err != nil {
			return fmt.Errorf("counting retries: %w", err)
		}
		if err := h.reads.QueryRow(ctx, exhaustedSinceSQL, sc.CallerID, sc.CalleeID).Scan(&o.ExhaustedHour, &o.ExhaustedDay); err != nil {
			return fmt.Errorf("counting exhausted attempts: %w", err)
		}
		return nil
	})
	wg.Wait()
	// The part that failed cancelled the others: report its error, not
	// their "context canceled" (unless the request itself was cancelled).
	var first error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return o, err
		}
		first = cmp.Or(first, err)
	}
	if first != nil {
		return o, first
	}

	total := map[ledger.Status]int64{}
	for _, c := range counts {
		if n := len(o.ByCaller); n == 0 || o.ByCaller[n-1].CallerID != c.caller {
			o.ByCaller = append(o.ByCaller, callerCount{CallerID: c.caller})
		}
		cc := &o.ByCaller[len(o.ByCaller)-1]
		cc.InFlight += c.n
		cc.ByStatus = append(cc.ByStatus, statusCount{c.status, c.n})
		total[c.status] += c.n
		o.InFlight += c.n
	}
	for i := range o.ByCaller {
		o.ByCaller[i].ByStatus = fillStatuses(o.ByCaller[i].ByStatus)
	}
	for _, st := range ledger.NonTerminal() {
		o.ByStatus = append(o.ByStatus, statusCount{st, total[st]})
	}

	o.OldestHeartbeat, o.NextDeadline = oldest, nextDL
	if o.OldestHeartbeat != nil {
		due := o.OldestHeartbeat.Add(h.cfg.HeartbeatTimeout)
		o.NextDue, o.NextDueReason = &due, "heartbeat_timeout"
	}
	if o.NextDeadline != nil && (o.NextDue == nil || o.NextDeadline.Before(*o.NextDue)) {
		d := *o.NextDeadline
		o.NextDue, o.NextDueReason = &d, "deadline_exceeded"
	}

	// The stuck windows are those of the clock the stuck counts read with.
	o.StuckHour, o.StuckDay = map[string]int64{}, map[string]int64{}
	o.Chart = make([]int64, chartMinutes)
	nowMinute := stuckNow.Truncate(time.Minute)
	o.ChartStart = nowMinute.Add(-(chartMinutes - 1) * time.Minute)
	hourSince := stuckNow.Add(-time.Hour)
	for _, r := range stuck {
		reason := r.reason
		if reason == "" {
			reason = "unknown"
		}
		o.StuckDay[reason] += r.n
		if !r.minute.Before(hourSince.Truncate(time.Minute)) {
			o.StuckHour[reason] += r.n
		}
		if i := int(r.minute.Sub(o.ChartStart) / time.Minute); i >= 0 && i < chartMinutes {
			o.Chart[i] += r.n
		}
	}
	return o, nil
}

// inFlightRow is one (caller, status) count of inFlightByCallerSQL.
type inFlightRow struct {
	caller string
	status ledger.Status
	n      int64
}

func (h *Handler) inFlightCounts(ctx context.Context, sc scope) ([]inFlightRow, error) {
	rows, err := h.reads.Query(ctx, inFlightByCallerSQL, sc.CallerID, sc.CalleeID)
	if err != nil {
		return nil, fmt.Errorf("counting in-flight delegations: %w", err)
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (inFlightRow, error) {
		var c inFlightRow
		err := r.Scan(&c.caller, &c.status, &c.n)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("counting in-flight delegations: %w", err)
	}
	return counts, nil
}

// stuckRow is one (reason, minute) count of stuckSinceSQL.
type stuckRow struct {
	reason string
	minute time.Time
	n      int64
}

// stuckOfDay returns the database clock and the stuck transitions of the
// day before it, by reason and minute.
func (h *Handler) stuckOfDay(ctx context.Context, sc scope) (time.Time, []stuckRow, error) {
	var now time.Time
	if err := h.reads.QueryRow(ctx, clockSQL).Scan(&now); err != nil {
		return now, nil, fmt.Errorf("reading the database clock: %w", err)
	}
	daySince := now.Add(-24 * time.Hour)
	var fromID int64
	if err := h.reads.QueryRow(ctx, eventsSinceSQL, daySince).Scan(&fromID); err != nil {
		return now, nil, fmt.Errorf("finding the events of the last day: %w", err)
	}
	rows, err := h.reads.Query(ctx, stuckSinceSQL, fromID, daySince, sc.CallerID, sc.CalleeID)
	if err != nil {
		return now, nil, fmt.Errorf("counting stuck transitions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stuckRow, error) {
		var c stuckRow
		err := r.Scan(&c.reason, &c.minute, &c.n)
		return c, err
	})
	if err != nil {
		return now, nil, fmt.Errorf("counting stuck transitions: %w", err)
	}
	return now, out, nil
}

// fillStatuses returns every non-terminal status with its count from cs.
// reasons returns the reasons to show: the sweep's, then any other found
// (an operator's writes, rows from before a reason existed), sorted.
func (o overview) reasons() []string {
	out := slices.Clone(stuckReasons)
	var extra []string
	for r := range o.StuckDay {
		if !slices.Contains(out, r) {
			extra = append(extra, r)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

func fillStatuses(cs []statusCount) []statusCount {
	out := make([]statusCount, 0, 3)
	for _, st := range ledger.NonTerminal() {
		var n int64
		for _, c := range cs {
			if c.Status == st {
				n = c.N
			}
		}
		out = append(out, statusCount{st, n})
	}
	return out
}

// listFilter is the delegations page's query string, parsed. Parameter
// names are the API's (caller_id, callee_id, status, in_flight, cursor,
// limit), plus created_after, created_before and id_prefix.
type listFilter struct {
	CallerID      string
	CalleeID      string
	Status        ledger.Status
	InFlight      bool
	CreatedAfter  time.Time // zero: no bound
	CreatedBefore time.Time // zero: no bound
	IDPrefix      string
	Cursor        string
	Limit         int
	// only, when not nil, narrows the statuses the filter asks for to these
	// (a bulk action's: the statuses it acts on).
	only []ledger.Status
}

// Page sizes of the delegations page.
const (
	defaultPageSize = 50
	maxPageSize     = 200
)

// minTime and maxTime bound the time filters when they are not set.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
)

// listPage is one page of the delegations list.
type listPage struct {
	Rows []ledger.Delegation
	Next string // cursor of the next page, "" on the last
}

// list reads one page of delegations matching f within sc. Which statement
// runs depends on the filters, most selective first: an id prefix (the
// primary key), a caller, a callee, else the statuses asked for.
func (h *Handler) list(ctx context.Context, sc scope, f listFilter) (listPage, error) {
	if sc.CallerID != "" {
		if f.CallerID != "" && f.CallerID != sc.CallerID {
			return listPage{}, nil // another caller's rows: none visible
		}
		f.CallerID = sc.CallerID
	}
	if sc.CalleeID != "" {
		if f.CalleeID != "" && f.CalleeID != sc.CalleeID {
			return listPage{}, nil
		}
		f.CalleeID = sc.CalleeID
	}
	statuses := ledger.StatusStrings(ledger.Statuses)
	switch {
	case f.Status != "" && f.InFlight && f.Status.Terminal():
		return listPage{}, nil
	case f.Status != "":
		statuses = []string{string(f.Status)}
	case f.InFlight:
		statuses = ledger.StatusStrings(ledger.NonTerminal())
	}
	if f.only != nil {
		statuses = slices.DeleteFunc(statuses, func(st string) bool { return !slices.Contains(f.only, ledger.Status(st)) })
		if len(statuses) == 0 {
			return listPage{}, nil
		}
	}
	after := minTime
	if !f.CreatedAfter.IsZero() {
		after = f.CreatedAfter
	}
	before := maxTime
	if !f.CreatedBefore.IsZero() {
		before = f.CreatedBefore
	}
	limit := f.Limit
	if limit == 0 {
		limit = defaultPageSize
	}

	var rows pgx.Rows
	var err error
	if f.IDPrefix != "" {
		afterID := ""
		if f.Cursor != "" {
			if afterID, err = decodeIDCursor(f.Cursor); err != nil {
				return listPage{}, err
			}
		}
		rows, err = h.reads.Query(ctx, listByIDPrefixSQL, f.IDPrefix, f.IDPrefix+"\U0010FFFF", afterID,
			statuses, f.CallerID, f.CalleeID, after, before, limit+1)
	} else {
		at, id := before, ""
		if f.Cursor != "" {
			cat, cid, err := decodeTimeCursor(f.Cursor)
			if err != nil {
				return listPage{}, err
			}
			if cat.Before(at) {
				at, id = cat, cid
			}
		}
		switch {
		case f.CallerID != "" && f.InFlight:
			rows, err = h.reads.Query(ctx, listInFlightByCallerSQL, f.CallerID, statuses, f.CalleeID, at, id, after, limit+1)
		case f.CallerID != "":
			rows, err = h.reads.Query(ctx, listByCallerSQL, f.CallerID, statuses, f.CalleeID, at, id, after, limit+1)
		case f.CalleeID != "":
			rows, err = h.reads.Query(ctx, listByCalleeSQL, f.CalleeID, statuses, at, id, after, limit+1)
		default:
			rows, err = h.reads.Query(ctx, listByStatusesSQL, statuses, at, id, after, limit+1)
		}
	}
	if err != nil {
		return listPage{}, fmt.Errorf("listing delegations: %w", err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[ledger.Delegation])
	if err != nil {
		return listPage{}, fmt.Errorf("listing delegations: %w", err)
	}
	page := listPage{Rows: ds}
	if len(ds) > limit {
		page.Rows = ds[:limit]
		last := ds[limit-1]
		if f.IDPrefix != "" {
			page.Next = encodeIDCursor(last.DelegationID)
		} else {
			page.Next = encodeTimeCursor(last.CreatedAt, last.DelegationID)
		}
	}
	return page, nil
}

// The cursors are opaque: base64url of "t<unix ns>:<id>" (newest-first
// pages) or "i<id>" (id-prefix pages).
func encodeTimeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("t" + strconv.FormatInt(at.UnixNano(), 10) + ":" + id))
}

func encodeIDCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("i" + id))
}

var errBadCursor = &ledger.FieldError{Field: "cursor", Reason: "is not a cursor of this page (follow the Next link)"}

func decodeTimeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(raw), "t") {
		return time.Time{}, "", errBadCursor
	}
	ns, id, ok := strings.Cut(string(raw[1:]), ":")
	if !ok {
		return time.Time{}, "", errBadCursor
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	return time.Unix(0, n).UTC(), id, nil
}

func decodeIDCursor(c string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(raw), "i") {
		return "", errBadCursor
	}
	return string(raw[1:]), nil
}
