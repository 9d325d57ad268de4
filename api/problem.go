package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/ledger"
)

// ProblemTypePrefix starts the type of every problem this API returns; the
// rest is a stable slug, e.g. "urn:sweeper:problem:invalid-field".
const ProblemTypePrefix = "urn:sweeper:problem:"

// Problem is an RFC 9457 problem details object, the body of every error
// response (Content-Type application/problem+json).
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Field names the invalid input, for invalid-field and invalid-json.
	Field string `json:"field,omitempty"`
	// Outcome and CurrentStatus explain a refused transition (409).
	Outcome       string `json:"outcome,omitempty"`
	CurrentStatus string `json:"current_status,omitempty"`

	retryAfter int // seconds, for 429 and 503
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

// The problem slugs: a stable contract, listed in docs/api.md.
func newProblem(status int, slug, title, detail string) *Problem {
	return &Problem{Type: ProblemTypePrefix + slug, Title: title, Status: status, Detail: detail}
}

func errInvalidJSON(field, detail string) *Problem {
	p := newProblem(http.StatusBadRequest, "invalid-json", "The request body is not acceptable JSON", detail)
	p.Field = field
	return p
}

func errInvalidField(field, detail string) *Problem {
	p := newProblem(http.StatusUnprocessableEntity, "invalid-field", "A field is invalid", detail)
	p.Field = field
	return p
}

func errInvalidParam(field, detail string) *Problem {
	p := newProblem(http.StatusBadRequest, "invalid-parameter", "A query parameter is invalid", detail)
	p.Field = field
	return p
}

var (
	errUnauthenticated = newProblem(http.StatusUnauthorized, "unauthenticated", "Authentication required",
		"send Authorization: Bearer <token>; the token is missing, invalid or revoked")
	errNotFound = newProblem(http.StatusNotFound, "not-found", "Not found",
		"no delegation with this id is visible to this token")
	errRouteNotFound = newProblem(http.StatusNotFound, "no-such-endpoint", "No such endpoint",
		"see /v1/openapi.json for the endpoints")
)

func errForbidden(detail string) *Problem {
	return newProblem(http.StatusForbidden, "forbidden", "Not allowed for this token", detail)
}

// problemFor maps a handler's error to the problem sent: typed errors of the
// API and the ledger to their status, anything else to a 500 or 503 whose
// detail says nothing about the cause (it is logged instead).
func problemFor(err error) *Problem {
	var p *Problem
	var fe *ledger.FieldError
	var use *ledger.UnknownStatusError
	var ce *ledger.ConflictError
	var mbe *http.MaxBytesError
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &mbe):
		return newProblem(http.StatusRequestEntityTooLarge, "body-too-large", "The request body is too large",
			fmt.Sprintf("the body may be at most %d bytes", mbe.Limit))
	case errors.As(err, &fe):
		return errInvalidField(fe.Field, fe.Error())
	case errors.As(err, &use):
		return errInvalidField("status", use.Error())
	case errors.As(err, &ce):
		return newProblem(http.StatusConflict, "conflict", "The write conflicts with an existing delegation", ce.Error())
	case errors.Is(err, ledger.ErrNotFound):
		return errNotFound
	case errors.Is(err, ledger.ErrInvalid):
		return errInvalidField("", "the database refused the value")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &connErr),
		errors.As(err, &pgErr) && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57"),
		!errors.As(err, &pgErr) && pgconn.SafeToRetry(err):
		p := newProblem(http.StatusServiceUnavailable, "unavailable", "The ledger is unavailable",
			"the database did not answer; retry later")
		p.retryAfter = 1
		return p
	}
	return newProblem(http.StatusInternalServerError, "internal", "Internal error",
		"the server failed to answer; the cause is logged")
}

// writeProblem is the one function that renders errors.
func (h *Handler) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := *problemFor(err)
	p.Instance = r.URL.Path
	// What a problem echoes of the request (a field name, the path) is cut
	// to the bounds openapi.json states.
	p.Title = ledger.Truncate(p.Title, maxProblemTitle)
	p.Detail = ledger.Truncate(p.Detail, maxProblemDetail)
	p.Instance = ledger.Truncate(p.Instance, maxProblemInstance)
	p.Field = ledger.Truncate(p.Field, maxProblemField)
	if p.Status >= 500 {
		h.log.Error("request failed", zap.String("method", r.Method), zap.String("route", routeOf(r)), zap.Error(err))
	}
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
