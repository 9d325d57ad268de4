package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/webhook"
)

// The /webhooks pages (admin only): each subscription's state, lag behind
// the feed's head and last delivery; one subscription's last 50 attempts;
// resume and send-a-test-event buttons (forms with the session's CSRF
// token, like the delegation page's action). Subscriptions are created,
// deleted and rotated with the CLI or the API, where the secret is shown.

// webhookRow is a subscription with its lag.
type webhookRow struct {
	webhook.Subscription
	Lag int64
}

type webhooksData struct {
	page
	Rows   []webhookRow
	Paused int
	Now    time.Time
}

type webhookData struct {
	page
	S        webhookRow
	Attempts []webhook.Attempt
	Now      time.Time
	CanTest  bool
}

// webhookNotices are the outcomes an action redirects with.
var webhookNotices = map[string]string{
	"resumed": "Resumed: delivery starts again with the event that was held.",
	"tested":  "Test event sent; its attempt is the newest below.",
}

func (h *Handler) adminOrFail(w http.ResponseWriter, r *http.Request, u who) bool {
	if !u.IsAdmin() {
		h.fail(w, r, http.StatusForbidden, "Only an admin token may see webhook subscriptions.")
		return false
	}
	return true
}

// webhookRows reads the subscriptions and the feed's head.
func (h *Handler) webhookRows(ctx context.Context) ([]webhookRow, error) {
	subs, err := webhook.NewStore(h.pool).List(ctx)
	if err != nil {
		return nil, err
	}
	head, err := h.ledger.FeedHead(ctx)
	if err != nil {
		return nil, err
	}
	rows := make([]webhookRow, 0, len(subs))
	for _, s := range subs {
		rows = append(rows, webhookRow{Subscription: s, Lag: max(head-s.Cursor, 0)})
	}
	return rows, nil
}

func (h *Handler) webhooksPage(w http.ResponseWriter, r *http.Request, u who) {
	if !h.adminOrFail(w, r, u) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	rows, err := h.webhookRows(ctx)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	paused := 0
	for _, row := range rows {
		if row.State != webhook.Active {
			paused++
		}
	}
	h.render(w, r, http.StatusOK, "webhooks", webhooksData{
		page: page{Title: "Webhooks", Nav: "webhooks", User: &u}, Rows: rows, Paused: paused, Now: h.cfg.Now(),
	})
}

func (h *Handler) webhookPage(w http.ResponseWriter, r *http.Request, u who) {
	if !h.adminOrFail(w, r, u) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	store := webhook.NewStore(h.pool)
	s, err := store.Get(ctx, r.PathValue("id"))
	if errors.Is(err, webhook.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, "No webhook subscription with this id.")
		return
	}
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	head, err := h.ledger.FeedHead(ctx)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	as, err := store.Attempts(ctx, s.ID, webhook.MaxAttemptsListed)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "webhook", webhookData{
		page: page{Title: "Webhook " + s.ID, Nav: "webhooks", User: &u, Notice: webhookNotices[r.URL.Query().Get("outcome")]},
		S:    webhookRow{Subscription: s, Lag: max(head-s.Cursor, 0)}, Attempts: as, Now: h.cfg.Now(),
		CanTest: h.cfg.WebhookTester != nil,
	})
}

// webhookAction runs resume or test on a subscription, then shows it.
func (h *Handler) webhookAction(action string) authedFunc {
	return func(w http.ResponseWriter, r *http.Request, u who) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
			return
		}
		if !h.checkCSRF(w, r, u) || !h.adminOrFail(w, r, u) {
			return
		}
		id := r.PathValue("id")
		// A test delivery waits for the endpoint: its own timeout, not the
		// page's query timeout.
		ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout+webhook.TimeoutDefault)
		defer cancel()
		var err error
		switch action {
		case "resumed":
			_, err = webhook.NewStore(h.pool).Resume(ctx, id)
		case "tested":
			if h.cfg.WebhookTester == nil {
				h.fail(w, r, http.StatusNotFound, "Test deliveries are not available in this console.")
				return
			}
			_, err = h.cfg.WebhookTester.Send(ctx, id)
		}
		if errors.Is(err, webhook.ErrNotFound) {
			h.fail(w, r, http.StatusNotFound, "No webhook subscription with this id.")
			return
		}
		if err != nil {
			h.serverError(w, r, err)
			return
		}
		h.log.Info("console: webhook action", zap.String("action", action), zap.String("subscription", id), zap.String("actor", u.Actor()))
		http.Redirect(w, r, "/webhooks/"+url.PathEscape(id)+"?outcome="+action, http.StatusSeeOther)
	}
}
