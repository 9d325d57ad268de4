// Package console is sweeper's web console: server-rendered pages over the
// ledger for operators, an http.Handler a service mounts (the daemon serves
// it on the API listener, next to the API's /v1/).
//
// Pages: / (what is in flight, by status and caller; stuck transitions of
// the last hour and day by reason and per minute over six hours; the oldest
// heartbeat and the next row due; the sweeper's runs when the daemon
// reports them), /delegations (filters in the query string, named like the
// API's: caller_id, callee_id, status, in_flight, created_after,
// created_before, id_prefix, limit, cursor), /delegations/{id} (every
// field, the heartbeat's age, the time to the deadline, the event
// timeline) and /live (stuck transitions as they commit, by server-sent
// events from the ledger's durable feed).
//
// Access uses the API's tokens and roles (internal/auth): sign in at /login
// with a token, or send Authorization: Bearer; a token never goes in a
// URL. Callers and workers see their own delegations only (others answer
// 404), readers see everything, admins may also mark a delegation failed,
// through the ledger, audited as "console:<token name>". Sessions are kept
// in memory server-side (see sessions); every POST carries a CSRF token and
// cross-origin POSTs are refused. Pages come from embedded templates
// (html/template) and an embedded stylesheet and script: `go build` builds
// everything, and the Content-Security-Policy allows no inline script and
// nothing from another origin.
//
// Every query is served by an index whose size follows the work in flight
// or the page asked for; the statements are in queries.go.
package console
