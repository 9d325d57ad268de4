package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/ledger"
)

// The delivery of one subscription: its worker reads a page of the feed
// after the cursor and delivers the page's matching events, up to
// Config.MaxInFlight at once, before it reads the next page.

// stopRecordTimeout bounds the recording of what was answered when a
// worker stops.
const stopRecordTimeout = 5 * time.Second

// trimEvery is how many attempts a worker logs between two trims of the
// attempts log (to AttemptsKept).
const trimEvery = 100

// session is what a worker keeps while it holds a subscription's lease:
// its own HTTP client, whose connection pool is sized for MaxInFlight (a
// subscription has one destination, so its connections are reused page
// after page, whatever other subscriptions to the same host do), and the
// attempts logged since the attempts log was last trimmed.
type session struct {
	id        string
	log       *zap.Logger
	send      sender
	sinceTrim int
}

// work delivers one subscription until ctx ends or the lease is lost.
func (d *Deliverer) work(ctx context.Context, id string) {
	s := &session{id: id, log: d.log.With(zap.String("subscription", id)), send: sender{
		client:    newClient(d.cfg.Timeout, d.cfg.AllowPrivateNetworks, d.cfg.Resolver, d.cfg.MaxInFlight),
		allowHTTP: d.cfg.AllowHTTP, allowPrivate: d.cfg.AllowPrivateNetworks,
	}}
	defer s.send.client.CloseIdleConnections()
	for ctx.Err() == nil {
		changed := d.waiter.Changed()
		err := d.step(ctx, s, changed)
		if errors.Is(err, errLeaseLost) {
			return
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("webhook delivery loop", zap.Error(err))
			sleep(ctx, d.cfg.PollInterval)
		}
	}
}

// step reads one page of the subscription's feed and delivers it, or
// waits for the next attempt or event.
func (d *Deliverer) step(ctx context.Context, s *session, changed <-chan struct{}) error {
	sub, err := d.load(ctx, s.id)
	if err != nil {
		return err
	}
	if sub.WaitSeconds > 0 {
		sleep(ctx, min(time.Duration(sub.WaitSeconds*float64(time.Second)), d.cfg.PollInterval))
		return nil
	}
	page, err := d.ledger.Feed(ctx, ledger.FeedFilter{
		After: sub.Cursor, AfterTx: sub.CursorTx, CallerID: sub.CallerID, CalleeID: sub.CalleeID, Limit: PageSize,
	})
	if err != nil {
		return err
	}
	if len(page.Events) == 0 {
		wait := d.cfg.PollInterval
		if page.Pending {
			wait = ledger.FeedSettleRetry
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-changed:
		case <-t.C:
		}
		return nil
	}
	// The secrets are read after the page, not with the subscription: every
	// event that committed after a rotation committed is then signed with the
	// new secret too, so a receiver may switch to it at once.
	var secret, previous string
	if err := d.cfg.Pool.QueryRow(ctx, signingSecretsSQL, sub.ID).Scan(&secret, &previous); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return errLeaseLost // deleted meanwhile
		}
		return fmt.Errorf("reading the signing secrets: %w", err)
	}
	return d.deliverPage(ctx, s, &sub, page, signingSecrets(secret, previous))
}

// eventState is where an event of a page stands.
type eventState uint8

const (
	passedOver eventState = iota // it does not match the subscription: never sent
	waiting                      // not sent (yet)
	sending
	delivered
	failed // any outcome but delivered
)

// pageEvent is one event of a page as its delivery goes.
type pageEvent struct {
	ev    ledger.Event
	state eventState
	// prev is the index of the page's previous matching event of the same
	// delegation, which must be delivered before this one is sent; -1 for
	// none.
	prev int
}

// sent is what one delivery came to, as its goroutine reports it.
type sent struct {
	i   int // the event's index in the page
	res result
	end time.Time // when the answer (or the failure) came
	// err says the delivery could not be made (its body could not be
	// built): not an attempt.
	err error
}

// attempt is one answered delivery, to be logged.
type attempt struct {
	ev  ledger.Event
	res result
	end time.Time
}

// deliverPage delivers the matching events of page and records what they
// came to; it returns once every delivery it started has ended.
//
// Events of one delegation go one after the other, in feed order: each is
// sent once the one before it is delivered (2xx). Events of different
// delegations go in parallel, up to Config.MaxInFlight at once, the oldest
// ready one first. The cursor moves to the end of the delivered prefix of
// the page (events passed over count as delivered). After a failure only
// events before it are still sent, so the cursor stops just before the
// failed event, whose retry (or pause, or for a 410 the disabling) is
// recorded in the same commit; events after it that were already delivered
// stay ahead of the cursor and are sent again, with the same webhook-id,
// when the cursor comes to them. While the subscription is failing, its
// head event goes alone until it is delivered, so a retry sends one event,
// as before concurrency.
//
// The attempts and the cursor's move are recorded in one round trip at the
// end of the page, and every PollInterval while a slow page lasts.
func (d *Deliverer) deliverPage(ctx context.Context, s *session, sub *leased, page ledger.FeedPage, secrets []string) error {
	evs := make([]pageEvent, len(page.Events))
	lastOf := map[string]int{}
	var ids []string
	for i, ev := range page.Events {
		evs[i] = pageEvent{ev: ev, state: passedOver, prev: -1}
		if !sub.Matches(ev) {
			continue
		}
		evs[i].state = waiting
		if p, ok := lastOf[ev.DelegationID]; ok {
			evs[i].prev = p
		} else {
			ids = append(ids, ev.DelegationID)
		}
		lastOf[ev.DelegationID] = i
	}
	// The bodies carry each delegation as it is now (a pruned one as null),
	// read for the whole page at once.
	dels, err := d.ledger.GetMany(ctx, ids)
	if err != nil {
		return err
	}
	parents := d.traceParents(ctx, ids)

	sendCtx, cancel := context.WithCancel(ctx)
	done := make(chan sent, len(evs)) // never blocks a sender
	inFlight := 0
	defer func() {
		// On an early return (a failed record): cut off what is in flight
		// and wait for it, so that no delivery outlives its worker.
		cancel()
		for ; inFlight > 0; inFlight-- {
			<-done
		}
	}()
	subID, url := sub.ID, sub.URL // the senders' copies: record writes sub
	limit := d.cfg.MaxInFlight
	if sub.FailedAttempts > 0 {
		limit = 1 // the head failed last time: it goes alone until it passes
	}
	var (
		stop         = len(evs) // the first failed event: nothing at or after it is sent
		head         = 0        // the events before head are delivered or passed over
		recordedHead = 0        // head when last recorded
		halt         bool       // stopping, or a body could not be built: send nothing more
		fatal        error
		pending      []attempt // answered, not yet recorded
		headFailure  *attempt  // the answer of the event at stop
		gone         *attempt  // the first 410
	)
	// A slow page records its delivered prefix every PollInterval, so that
	// a replica that takes over does not send it again.
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	for {
		for i := head; i < stop && inFlight < limit && !halt; i++ {
			e := &evs[i]
			if e.state != waiting || e.prev >= 0 && evs[e.prev].state != delivered {
				continue
			}
			e.state = sending
			inFlight++
			del, found := dels[e.ev.DelegationID]
			go func(i int, ev ledger.Event) {
				done <- d.attempt(sendCtx, s, subID, url, secrets, i, ev, del, found, parents[ev.DelegationID])
			}(i, e.ev)
		}
		if inFlight == 0 {
			break
		}
		var r sent
		select {
		case r = <-done:
		case <-tick.C:
			if !halt && head > recordedHead {
				if err := d.record(ctx, s, sub, pending, page, head, nil); err != nil {
					return err
				}
				pending, recordedHead = nil, head
			}
			continue
		}
		inFlight--
		e := &evs[r.i]
		switch {
		case r.err != nil:
			e.state = waiting
			halt, fatal = true, r.err
		case ctx.Err() != nil && r.res.outcome != OutcomeDelivered:
			e.state = waiting // cut off by the stop: not the endpoint's failure, not logged
		default:
			d.metrics.observe(sub.ID, r.res)
			a := attempt{ev: e.ev, res: r.res, end: r.end}
			pending = append(pending, a)
			if a.res.outcome == OutcomeDelivered {
				e.state = delivered
				limit = d.cfg.MaxInFlight
			} else {
				e.state = failed
				if r.i < stop {
					stop, headFailure = r.i, &a
				}
				if a.res.outcome == OutcomeGone && gone == nil {
					gone = &a
				}
			}
		}
		halt = halt || ctx.Err() != nil
		for head < len(evs) && (evs[head].state == passedOver || evs[head].state == delivered) {
			head++
		}
	}
	fail := headFailure
	if gone != nil {
		fail = gone // the endpoint is gone, whichever event it said so of
	}
	rctx := ctx
	if ctx.Err() != nil {
		// Stopping: record what was answered, for the next holder not to
		// send it again.
		var cancelRecord context.CancelFunc
		rctx, cancelRecord = context.WithTimeout(context.WithoutCancel(ctx), stopRecordTimeout)
		defer cancelRecord()
	}
	if err := d.record(rctx, s, sub, pending, page, head, fail); err != nil {
		return err
	}
	if fatal != nil {
		return fatal
	}
	return ctx.Err()
}

// attempt makes one delivery of ev, event i of the page, to url, with the
// delegation del (found false: pruned since) and the trace context it was
// inserted under (traceParent, "" for none).
func (d *Deliverer) attempt(ctx context.Context, s *session, subID, url string, secrets []string, i int, ev ledger.Event, del ledger.Delegation, found bool, traceParent string) sent {
	body, err := d.payload(ev, del, found)
	if err != nil {
		return sent{i: i, err: fmt.Errorf("the body of event %d: %w", ev.ID, err)}
	}
	ctx, span := d.startSpan(ctx, subID, ev, traceParent)
	defer span.End()
	res := s.send.post(ctx, url, WebhookID(ev.ID), secrets, body)
	span.SetAttributes(attribute.String("webhook.outcome", string(res.outcome)))
	if res.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.status))
	}
	if res.outcome != OutcomeDelivered {
		span.SetStatus(codes.Error, truncate(res.summary(), 200))
	}
	return sent{i: i, res: res, end: time.Now()}
}

func (d *Deliverer) payload(ev ledger.Event, del ledger.Delegation, found bool) ([]byte, error) {
	var p Payload
	p.Type = "delegation." + string(ev.ToStatus)
	p.Timestamp = ev.At.UTC()
	p.Data.Event = ev
	switch {
	case !found:
		p.Data.Delegation = nil // pruned since: the event alone
	case d.cfg.Render != nil:
		p.Data.Delegation = d.cfg.Render(del)
	default:
		p.Data.Delegation = del
	}
	return json.Marshal(p)
}

// record logs atts and moves the cursor to the end of the delivered prefix
// of page (the event before page.Events[head]), and with fail records that
// failure of the head event: the next attempt's time, or the pause, or,
// for a 410, the disabling. All in one round trip and one (implicit)
// transaction, fenced by the lease; now and then it trims the attempts log
// too. It then sends the attempts' test signals.
func (d *Deliverer) record(ctx context.Context, s *session, sub *leased, atts []attempt, page ledger.FeedPage, head int, fail *attempt) error {
	b := &pgx.Batch{}
	if len(atts) > 0 {
		b.Queue(insertAttemptsSQL, attemptsArgs(sub.ID, atts)...)
	}
	var to int64
	var tx string // "" below the page's end: advanceCursorSQL reads it from the event
	if head > 0 {
		to = page.Events[head-1].ID
		if head == len(page.Events) {
			tx = page.LastTx
		}
	}
	move := head > 0 && to != sub.Cursor
	if move {
		delivered := slices.ContainsFunc(atts, func(a attempt) bool { return a.res.outcome == OutcomeDelivered })
		b.Queue(advanceCursorSQL, sub.ID, d.cfg.Owner, to, tx, delivered, d.cfg.LeaseTTL)
	}
	var backoff time.Duration
	if fail != nil {
		if fail.res.outcome == OutcomeGone {
			b.Queue(disableSQL, sub.ID, d.cfg.Owner, "the endpoint answered 410 Gone")
		} else {
			n := sub.FailedAttempts + 1
			if move {
				n = 1 // the move clears the failure record: a new head event fails
			}
			backoff = d.backoff(n)
			reason := fmt.Sprintf("paused after failing for %s (webhooks.max_retry_age); last error: %s", d.cfg.MaxRetryAge, fail.res.summary())
			b.Queue(failedAttemptSQL, sub.ID, d.cfg.Owner, backoff, d.cfg.MaxRetryAge, truncate(reason, 1024))
		}
	}
	trim := s.sinceTrim+len(atts) >= trimEvery
	if trim {
		b.Queue(trimAttemptsSQL, sub.ID, AttemptsKept)
	}
	if b.Len() == 0 {
		return nil
	}
	state := Active
	var failures int
	br := d.cfg.Pool.SendBatch(ctx, b)
	err := func() error {
		if len(atts) > 0 {
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("logging %d attempts: %w", len(atts), err)
			}
		}
		if move {
			if err := br.QueryRow().Scan(&sub.CursorTx); err != nil {
				return err
			}
		}
		if fail != nil {
			if fail.res.outcome == OutcomeGone {
				state = Disabled
				if _, err := br.Exec(); err != nil {
					return err
				}
			} else {
				var st string
				if err := br.QueryRow().Scan(&st, &failures); err != nil {
					return err
				}
				state = State(st)
			}
		}
		return nil
	}()
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return errLeaseLost
	}
	if err != nil {
		return err
	}
	if move {
		sub.Cursor, sub.FailedAttempts = to, 0
	}
	if trim {
		s.sinceTrim = 0
	} else {
		s.sinceTrim += len(atts)
	}
	if fail != nil {
		sub.FailedAttempts = failures
		switch state {
		case Disabled:
			s.log.Warn("webhook subscription disabled: the endpoint answered 410 Gone", zap.Int64("event_id", fail.ev.ID))
		case Paused:
			s.log.Warn("webhook subscription paused: its head event kept failing for webhooks.max_retry_age",
				zap.Int64("event_id", fail.ev.ID), zap.Int("failed_attempts", failures), zap.String("last_error", fail.res.summary()))
		default:
			s.log.Info("webhook delivery failed; retrying", zap.Int64("event_id", fail.ev.ID), zap.Int("failed_attempts", failures),
				zap.Duration("retry_in", backoff), zap.String("error", fail.res.summary()))
		}
	}
	for _, a := range atts {
		d.TestSignals.Attempt.Signal(AttemptDone{Subscription: sub.ID, EventID: a.ev.ID, Outcome: a.res.outcome, State: state})
	}
	return nil
}

// attemptsArgs are the arguments of insertAttemptsSQL for atts, in their
// order (the order they were answered in).
func attemptsArgs(subID string, atts []attempt) []any {
	n := len(atts)
	var (
		events    = make([]int64, n)
		ids       = make([]string, n)
		ages      = make([]int64, n)
		statuses  = make([]int32, n)
		latencies = make([]int32, n)
		outcomes  = make([]string, n)
		errs      = make([]string, n)
		responses = make([]string, n)
	)
	now := time.Now()
	for i, a := range atts {
		events[i], ids[i] = a.ev.ID, WebhookID(a.ev.ID)
		ages[i] = max(now.Sub(a.end).Microseconds(), 0)
		statuses[i] = int32(a.res.status)
		latencies[i] = int32(min(a.res.latency.Milliseconds(), 1<<31-1))
		outcomes[i], errs[i], responses[i] = string(a.res.outcome), a.res.err, a.res.response
	}
	return []any{subID, events, ids, ages, statuses, latencies, outcomes, errs, responses}
}
