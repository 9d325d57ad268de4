// Package webhook pushes the ledger's events to HTTP endpoints: signed,
// at least once, in feed order per delegation, per subscription.
//
// A subscription (Store) is a consumer of the durable feed
// (ledger.Ledger.Feed) with its own persisted cursor: the feed already gives
// the total order and completeness, so there is no second outbox. The
// Deliverer, one of the daemon's services, holds a lease on each
// subscription it delivers (a row lock by time through the database, no
// leader), reads the feed after the subscription's cursor a page at a time,
// POSTs each matching event in the Standard Webhooks format (https://www.standardwebhooks.com:
// webhook-id, webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256>"),
// up to Config.MaxInFlight at once (events of one delegation one after the
// other), and moves the cursor only past events answered 2xx, to the end of
// the page's delivered prefix. A failed delivery is retried with
// exponential backoff and jitter, up to Config.MaxRetryAge, after which the
// subscription is paused; a 410 Gone disables it.
//
// Destinations are dialed through a net.Dialer whose Control refuses
// loopback, private, link-local, unique-local and cloud metadata addresses
// at connect time (after DNS resolution, so a rebinding name cannot reach
// them) unless Config.AllowPrivateNetworks; no redirect is followed.
//
// Receivers verify deliveries with any Standard Webhooks library, or with
// Verify. The package's SQL is in queries.go.
package webhook
