package api

import (
	"errors"
	"net/http"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// The webhook subscription endpoints (/v1/webhooks): admin tokens only.
// Secrets appear in the answers of create and rotate-secret, once, and in
// no other answer or log.

// WebhookRequest is the body of POST /v1/webhooks.
type WebhookRequest struct {
	URL      string          `json:"url"`
	Events   []ledger.Status `json:"events"`
	CallerID string          `json:"caller_id"`
	CalleeID string          `json:"callee_id"`
}

// WebhooksResponse answers GET /v1/webhooks.
type WebhooksResponse struct {
	Subscriptions []webhook.Subscription `json:"subscriptions"`
}

// WebhookAttemptsResponse answers GET /v1/webhooks/{id}/attempts.
type WebhookAttemptsResponse struct {
	Attempts []webhook.Attempt `json:"attempts"`
}

// MaxWebhooksListed bounds GET /v1/webhooks: the oldest subscriptions,
// more are left out (`sweeper webhook list` lists every one).
const MaxWebhooksListed = 10000

var errWebhookNotFound = newProblem(http.StatusNotFound, "not-found", "Not found", "no webhook subscription with this id")

func adminOnly(p auth.Principal) error {
	if p.Role != auth.RoleAdmin {
		return errForbidden("only admin tokens manage webhook subscriptions")
	}
	return nil
}

// webhookID reads the {id} of the path: a subscription id (wh_ and 24
// lower-case hex digits) or a 422 naming it, before any query runs. The
// request has no query parameters.
func webhookID(r *http.Request) (string, error) {
	if _, err := query(r); err != nil {
		return "", err
	}
	id := r.PathValue("id")
	if err := webhook.CheckID("id", id); err != nil {
		return "", err
	}
	return id, nil
}

func webhookError(err error) error {
	if errors.Is(err, webhook.ErrNotFound) {
		return errWebhookNotFound
	}
	return err
}

func (h *Handler) createWebhook(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	var req WebhookRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	c, err := h.webhooks.Create(r.Context(), webhook.NewSubscription{
		URL: req.URL, Events: req.Events, CallerID: req.CallerID, CalleeID: req.CalleeID,
		AllowHTTP: h.opts.WebhooksAllowHTTP, AllowPrivate: h.opts.WebhooksAllowPrivateNetworks,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/webhooks/"+c.ID)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (h *Handler) listWebhooks(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	subs, err := h.webhooks.ListFirst(r.Context(), MaxWebhooksListed)
	if err != nil {
		return err
	}
	if subs == nil {
		subs = []webhook.Subscription{}
	}
	writeJSON(w, http.StatusOK, WebhooksResponse{Subscriptions: subs})
	return nil
}

func (h *Handler) getWebhook(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	s, err := h.webhooks.Get(r.Context(), id)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (h *Handler) deleteWebhook(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	if err := h.webhooks.Delete(r.Context(), id); err != nil {
		return webhookError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) rotateWebhookSecret(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	c, err := h.webhooks.RotateSecret(r.Context(), id)
	if err != nil {
		return webhookError(err)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (h *Handler) resumeWebhook(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	s, err := h.webhooks.Resume(r.Context(), id)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (h *Handler) webhookAttempts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := adminOnly(p); err != nil {
		return err
	}
	q, err := query(r, "limit")
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := webhook.CheckID("id", id); err != nil {
		return err
	}
	limit, err := intParam(q, "limit", 1, webhook.MaxAttemptsListed)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = webhook.MaxAttemptsListed
	}
	if _, err := h.webhooks.Get(r.Context(), id); err != nil {
		return webhookError(err)
	}
	as, err := h.webhooks.Attempts(r.Context(), id, limit)
	if err != nil {
		return err
	}
	if as == nil {
		as = []webhook.Attempt{}
	}
	writeJSON(w, http.StatusOK, WebhookAttemptsResponse{Attempts: as})
	return nil
}
