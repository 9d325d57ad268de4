package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/ledger"
)

// The live page: stuck transitions as they commit, as server-sent events
// read from the ledger's durable feed (ledger.FeedWait, woken by the
// Waiter's LISTEN). A browser that reconnects sends Last-Event-ID, the id of
// the last event it got, and the stream resumes from there: nothing is lost
// across a dropped connection.

// Limits of the live streams.
const (
	// maxStreams bounds the open streams of one console.
	maxStreams = 200
	// streamWait is how long one long poll of the feed waits; a comment is
	// sent when it ends empty, which keeps proxies from closing the stream.
	streamWait = 25 * time.Second
	// streamWriteTimeout bounds one write to a slow client.
	streamWriteTimeout = 10 * time.Second
	// recentStuckRows is how many stuck transitions the page shows at first.
	recentStuckRows = 20
)

// liveEvent is one stuck transition, as the live page shows it.
type liveEvent struct {
	ID           int64     `json:"id"`
	DelegationID string    `json:"delegation_id"`
	CallerID     string    `json:"caller_id"`
	CalleeID     string    `json:"callee_id"`
	Reason       string    `json:"reason"`
	Actor        string    `json:"actor"`
	At           time.Time `json:"at"`
	// Display forms, already made visible (see visible) for the script,
	// which inserts them as text.
	AtUTC string `json:"at_utc"`
	Href  string `json:"href"`
}

func newLiveEvent(id int64, delegationID, callerID, calleeID, reason, actor string, at time.Time) liveEvent {
	return liveEvent{
		ID: id, DelegationID: visible(delegationID, cellRunes), CallerID: visible(callerID, cellRunes),
		CalleeID: visible(calleeID, cellRunes), Reason: visible(reason, cellRunes), Actor: visible(actor, cellRunes),
		At: at.UTC(), AtUTC: formatUTC(at), Href: detailHref(delegationID),
	}
}

// detailHref is the path of a delegation's page.
func detailHref(id string) string {
	return "/delegations/" + url.PathEscape(id)
}

type liveData struct {
	page
	Recent []liveEvent
	Now    time.Time
}

func (h *Handler) livePage(w http.ResponseWriter, r *http.Request, u who) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	sc := scopeOf(u.Principal)
	rows, err := h.reads.Query(ctx, recentStuckSQL, recentStuckRows, sc.CallerID, sc.CalleeID)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	var recent []liveEvent
	var e liveEvent
	_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.DelegationID, &e.Reason, &e.Actor, &e.At, &e.CallerID, &e.CalleeID}, func() error {
		recent = append(recent, newLiveEvent(e.ID, e.DelegationID, e.CallerID, e.CalleeID, e.Reason, e.Actor, e.At))
		return nil
	})
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "live", liveData{
		page:   page{Title: "Live", Nav: "live", User: &u},
		Recent: recent, Now: h.cfg.Now(),
	})
}

// waiter returns the Waiter of the live streams, starting the console's own
// on first use when Config gave none.
func (h *Handler) waiter(ctx context.Context) (*ledger.Waiter, error) {
	if h.cfg.Waiter != nil {
		return h.cfg.Waiter, nil
	}
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	if h.ownWaiter != nil {
		return h.ownWaiter, nil
	}
	select {
	case <-h.closed:
		return nil, errors.New("console: closed")
	default:
	}
	w := ledger.NewWaiter(h.pool)
	w.OnError = func(err error) { h.log.Warn("console: live feed connection lost; reconnecting", zap.Error(err)) }
	if err := w.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	h.ownWaiter = w
	return w, nil
}

func (h *Handler) liveEvents(w http.ResponseWriter, r *http.Request, u who) {
	if n := h.streams.Add(1); n > maxStreams {
		h.streams.Add(-1)
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many live streams", http.StatusServiceUnavailable)
		return
	}
	defer h.streams.Add(-1)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-h.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	wt, err := h.waiter(ctx)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	sc := scopeOf(u.Principal)
	f := ledger.FeedFilter{ToStatus: ledger.StatusStuck, CallerID: sc.CallerID, CalleeID: sc.CalleeID}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "Last-Event-ID must be an event id", http.StatusBadRequest)
			return
		}
		f.After = n
	} else {
		qctx, qcancel := context.WithTimeout(ctx, h.cfg.QueryTimeout)
		f.After, err = h.ledger.FeedHead(qctx)
		qcancel()
		if err != nil {
			h.serverError(w, r, err)
			return
		}
	}

	rc := http.NewResponseController(w)
	// The stream outlives the server's read and write timeouts (the API
	// listener sets both): no read deadline, and a write deadline per write
	// instead of one for the whole response.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write([]byte(s)); err != nil {
			return err
		}
		return rc.Flush()
	}
	// retry: the browser's reconnection delay; the first comment tells the
	// page the stream is open.
	if err := write("retry: 2000\n: open\n\n"); err != nil {
		return
	}
	for {
		page, err := h.ledger.FeedWait(ctx, wt, f, streamWait)
		var fe *ledger.FieldError
		if errors.As(err, &fe) && f.After != 0 {
			// A Last-Event-ID that names no event (its delegation was
			// deleted by retention, or another database): go on from now.
			qctx, qcancel := context.WithTimeout(ctx, h.cfg.QueryTimeout)
			f.After, err = h.ledger.FeedHead(qctx)
			qcancel()
			if err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("console: live feed read failed", zap.Error(err))
			}
			return
		}
		var b strings.Builder
		for _, e := range page.Events {
			le := newLiveEvent(e.ID, e.DelegationID, e.CallerID, e.CalleeID, e.Reason, e.Actor, e.At)
			data, _ := json.Marshal(le)
			fmt.Fprintf(&b, "id: %d\nevent: stuck\ndata: %s\n\n", e.ID, data)
			f.After = e.ID
		}
		if b.Len() == 0 {
			b.WriteString(": waiting\n\n")
		}
		if err := write(b.String()); err != nil {
			return
		}
	}
}
