// Package apiclient is a typed Go client of sweeper's ledger HTTP API
// (docs/api.md), for services that use the API instead of the database.
// It depends on the standard library alone: it links neither pgx nor the
// server.
//
//	c := apiclient.New("http://sweeper.internal:8080", os.Getenv("SWEEPER_TOKEN"))
//	res, err := c.Insert(ctx, apiclient.InsertRequest{DelegationID: "task-42", CalleeID: "invoice-agent"})
//	...
//	for ev, err := range c.Follow(ctx, apiclient.FeedQuery{After: cursor}) {
//		...
//	}
//
// Every error answer is a *ProblemError carrying the RFC 9457 problem
// details; answers 429 (rate limited) and 503 (database unavailable) are
// retried after their Retry-After, up to Client.MaxRetries times. Every write
// of the API is idempotent, so a retry never writes twice.
//
// The types mirror the schemas of the OpenAPI document (api/openapi.json);
// a test fails when a schema and its type differ. Fields a newer daemon adds
// are ignored, so an older client keeps working.
package apiclient
