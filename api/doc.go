// Package api serves sweeper's delegation ledger over HTTP: JSON under /v1,
// bearer tokens with roles (see internal/auth), RFC 9457 problem details for
// every error, and an OpenAPI 3.1 document at /v1/openapi.json.
//
// The daemon serves it on its own listener (api.listen); a service that
// embeds the ledger mounts the same endpoints as an http.Handler:
//
//	h, err := api.NewHandler(api.Options{Pool: pool, Logger: log})
//	...
//	if err := h.Start(ctx); err != nil { ... } // the feed's LISTEN connection
//	defer h.Stop()
//	mux.Handle("/v1/", h)
//
// Every write goes through the ledger package, so the API has the same
// lifecycle rules and outcomes as Go callers; the audit actor of a write is
// "api:<token name>". The API runs no SQL of its own.
package api
