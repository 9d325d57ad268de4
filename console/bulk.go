package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasksweeper/sweeper/ledger"
)

// Bulk actions: an admin acts on every delegation matching the list's
// current filter. GET /bulk shows what the action would do, with
// the exact count of rows it acts on; the confirmation form posts to
// POST /bulk, which finds the rows again and acts on at most
// ledger.MaxBulk of them through the ledger (chunks of ledger.BulkChunk rows,
// one transaction each), every row audited as console:<token name>.

// bulkAction is one kind of bulk action.
type bulkAction struct {
	Name  string // the form value
	Title string // what the buttons say
	// only are the statuses it acts on; retried rows are left out of a
	// retry.
	only []ledger.Status
}

var bulkActions = map[string]bulkAction{
	"fail":  {Name: "fail", Title: "Mark failed", only: ledger.NonTerminal()},
	"retry": {Name: "retry", Title: "Retry", only: ledger.RetryableStatuses()},
}

// BulkTimeoutDefault bounds the database work of one bulk action (up to
// ledger.MaxBulk rows, written in chunks).
const BulkTimeoutDefault = 2 * time.Minute

// bulkPageSize is the page the candidates are read in.
const bulkPageSize = 1000

// bulkTargets returns the ids a bulk action on f (within sc) acts on, at
// most ledger.MaxBulk, newest first (id order for an id prefix), and
// whether more match beyond them.
func (h *Handler) bulkTargets(ctx context.Context, sc scope, f listFilter, a bulkAction) ([]string, bool, error) {
	f.only, f.Cursor, f.Limit = a.only, "", bulkPageSize
	if a.Name == "fail" {
		f.InFlight = true // the in-flight indexes, not the history
	}
	var ids []string
	for {
		pg, err := h.list(ctx, sc, f)
		if err != nil {
			return nil, false, err
		}
		page := make([]string, 0, len(pg.Rows))
		for _, d := range pg.Rows {
			page = append(page, d.DelegationID)
		}
		if a.Name == "retry" && len(page) > 0 {
			rows, err := h.reads.Query(ctx, notRetriedSQL, page)
			if err != nil {
				return nil, false, fmt.Errorf("finding delegations not yet retried: %w", err)
			}
			page = page[:0]
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return nil, false, err
				}
				page = append(page, id)
			}
			if err := rows.Err(); err != nil {
				return nil, false, fmt.Errorf("finding delegations not yet retried: %w", err)
			}
		}
		for _, id := range page {
			if len(ids) == ledger.MaxBulk {
				return ids, true, nil
			}
			ids = append(ids, id)
		}
		if pg.Next == "" {
			return ids, false, nil
		}
		f.Cursor = pg.Next
	}
}

// filterQuery is the list filter of q (without cursor and limit), as a
// query string for the bulk page's links and forms.
func filterQuery(q url.Values) url.Values {
	out := url.Values{}
	for _, k := range []string{"caller_id", "callee_id", "status", "in_flight", "created_after", "created_before", "id_prefix"} {
		if v := q.Get(k); v != "" {
			out.Set(k, v)
		}
	}
	return out
}

// bulkURL is the page of bulk action a on the filter of q.
func bulkURL(action string, q url.Values) string {
	fq := filterQuery(q)
	fq.Set("action", action)
	return "/bulk?" + fq.Encode()
}

type bulkData struct {
	page
	Action bulkAction
	F      listFilter
	// ListURL is the list of the filter, AgainURL this action's page on
	// it; Fields the filter's pairs, for the form.
	ListURL, AgainURL string
	Fields            [][2]string
	Count             int
	More              bool
	// Done is set after the action ran: Applied rows written of Count.
	Done    bool
	Applied int
	Retried int
	Errors  []string
}

// bulkRequest reads the action and the filter of a bulk request; on a bad
// one it answers and returns ok false.
func (h *Handler) bulkRequest(w http.ResponseWriter, r *http.Request, u who, q url.Values) (bulkAction, listFilter, bulkData, bool) {
	a, ok := bulkActions[q.Get("action")]
	if !ok {
		h.fail(w, r, http.StatusBadRequest, "action must be fail or retry.")
		return a, listFilter{}, bulkData{}, false
	}
	if !u.IsAdmin() {
		h.fail(w, r, http.StatusForbidden, "Only an admin token may act on delegations.")
		return a, listFilter{}, bulkData{}, false
	}
	fq := filterQuery(q)
	f, errs := parseList(fq)
	d := bulkData{
		page:   page{Title: a.Title + " every matching delegation", Nav: "delegations", User: &u},
		Action: a, F: f, Errors: errs, ListURL: "/delegations?" + fq.Encode(), AgainURL: bulkURL(a.Name, q),
	}
	for _, k := range []string{"caller_id", "callee_id", "status", "in_flight", "created_after", "created_before", "id_prefix"} {
		if v := fq.Get(k); v != "" {
			d.Fields = append(d.Fields, [2]string{k, v})
		}
	}
	if len(errs) > 0 {
		h.render(w, r, http.StatusBadRequest, "bulk", d)
		return a, f, d, false
	}
	return a, f, d, true
}

// bulkConfirm shows what a bulk action would do: the exact count of the
// rows it acts on now (at most ledger.MaxBulk), and the form that runs it.
func (h *Handler) bulkConfirm(w http.ResponseWriter, r *http.Request, u who) {
	a, f, d, ok := h.bulkRequest(w, r, u, r.URL.Query())
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.BulkTimeout)
	defer cancel()
	ids, more, err := h.bulkTargets(ctx, scopeOf(u.Principal), f, a)
	if err != nil {
		h.listError(w, r, d, err)
		return
	}
	d.Count, d.More = len(ids), more
	h.render(w, r, http.StatusOK, "bulk", d)
}

// bulkAct runs a bulk action: it finds the rows again (the count may have
// changed since the confirmation) and writes them through the ledger.
func (h *Handler) bulkAct(w http.ResponseWriter, r *http.Request, u who) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !h.checkCSRF(w, r, u) {
		return
	}
	a, f, d, ok := h.bulkRequest(w, r, u, r.PostForm)
	if !ok {
		return
	}
	reason, msg := formReason(r.PostForm.Get("reason"))
	if msg != "" {
		h.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.BulkTimeout)
	defer cancel()
	ids, more, err := h.bulkTargets(ctx, scopeOf(u.Principal), f, a)
	if err != nil {
		h.listError(w, r, d, err)
		return
	}
	var res ledger.BulkResult
	switch a.Name {
	case "fail":
		res, err = h.ledger.SetStatusMany(ctx, ids, ledger.StatusFailed, ledger.Change{
			Actor: u.Actor(), Reason: reason, Error: "marked failed in the console: " + reason,
		})
	case "retry":
		res, err = h.ledger.RetryMany(ctx, ids, u.Actor(), reason)
	}
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	d.Done, d.Count, d.More, d.Applied, d.Retried = true, len(ids), more, res.Applied, res.Retried
	h.render(w, r, http.StatusOK, "bulk", d)
}

// listError answers a list read that failed: a bad cursor or filter is the
// user's (400), anything else the server's.
func (h *Handler) listError(w http.ResponseWriter, r *http.Request, d bulkData, err error) {
	if fe, ok := asFieldError(err); ok {
		d.Errors = []string{fe.Error()}
		h.render(w, r, http.StatusBadRequest, "bulk", d)
		return
	}
	h.serverError(w, r, err)
}

// formReason validates the reason an admin gives for an action: the reason
// and "" or "" and what is wrong with it.
func formReason(v string) (string, string) {
	reason := strings.TrimSpace(v)
	switch {
	case reason == "":
		return "", "reason is required: say why."
	case !utf8.ValidString(reason) || strings.ContainsRune(reason, 0):
		return "", "reason is not valid text."
	case utf8.RuneCountInString(reason) > maxReasonRunes:
		return "", fmt.Sprintf("reason is longer than %d characters.", maxReasonRunes)
	}
	return reason, ""
}
