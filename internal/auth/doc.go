// Package auth holds the bearer tokens of sweeper's HTTP API and what each
// one may do.
//
// A token is 32 random bytes, shown once when it is created
// (Store.Create) and stored only as its SHA-256 hash: high-entropy tokens
// need no slow password hash. Each token has one Role and, for callers and
// workers, the caller_id or callee_id it acts for (its principal).
// Store.Authenticate reads the table on every call, so a revoked token is
// refused at once.
//
// The scope helpers (Principal.CanSee, CanInsert, CanTransition,
// CanHeartbeat) are the one statement of the roles; the API and the console
// both use them.
package auth
