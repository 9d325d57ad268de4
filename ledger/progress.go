package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Progress is what a worker reports with its heartbeats ("step 3 of 7", a
// cursor, a checkpoint): a JSON object of at most MaxProgressBytes. The
// ledger keeps the latest, and the database records when it last changed
// (Delegation.ProgressAt, by its own clock, for every writer). A delegation
// with a progress timeout (its own, or the sweeper's sweep.progress_timeout)
// whose progress has not changed for that long is marked stuck with reason
// "stalled", however often it heartbeats.

// MaxProgressBytes bounds a progress report, as PostgreSQL prints it (the
// schema's CHECK holds the same bound for writers that bypass this package).
const MaxProgressBytes = 8192

// Bounds of a delegation's own progress, queue and start timeouts
// (NewDelegation); the schema's CHECKs hold the same bounds.
const (
	MinWaitTimeout = time.Second
	MaxWaitTimeout = 7 * 24 * time.Hour
)

// Beat is one heartbeat of HeartbeatBeats: a delegation and, optionally,
// its progress (nil, or JSON null, leaves the stored progress as it is).
type Beat struct {
	ID       string
	Progress json.RawMessage
}

// checkProgress validates a progress report and returns it compacted, as
// the text the statements send: nil for none (empty or JSON null). It must
// be a JSON object without NUL characters (PostgreSQL's jsonb cannot hold
// them), of at most MaxProgressBytes as PostgreSQL prints it: the compact
// form plus the space jsonb puts after each ':' and ',', with numbers in
// exponent form counted as written out in full.
func checkProgress(field string, raw json.RawMessage) (*string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	// Compact validates as it goes.
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, &FieldError{Field: field, Reason: "is not valid JSON"}
	}
	if raw[0] != '{' {
		return nil, &FieldError{Field: field, Reason: "must be a JSON object"}
	}
	compact := buf.Bytes()
	if len(compact) > MaxProgressBytes {
		return nil, &FieldError{Field: field, Reason: fmt.Sprintf("is larger than %d bytes (%d)", MaxProgressBytes, len(compact))}
	}
	size, nul := printedSize(compact)
	if nul {
		return nil, &FieldError{Field: field, Reason: "contains a NUL character (\\u0000)"}
	}
	if size > MaxProgressBytes {
		return nil, &FieldError{Field: field, Reason: fmt.Sprintf("is larger than %d bytes as stored (%d)", MaxProgressBytes, size)}
	}
	s := buf.String()
	return &s, nil
}

// printedSize is an upper bound of the length of compact JSON as jsonb
// prints it, and whether a string holds an escaped NUL.
func printedSize(compact []byte) (size int, nul bool) {
	size = len(compact)
	inString, escaped := false, false
	for i := 0; i < len(compact); i++ {
		c := compact[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
				if c == 'u' && i+4 < len(compact) && string(compact[i+1:i+5]) == "0000" {
					nul = true
				}
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ':' || c == ',':
			size++
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			for j < len(compact) && strings.IndexByte("+-.0123456789eE", compact[j]) >= 0 {
				j++
			}
			if lit := string(compact[i:j]); strings.ContainsAny(lit, "eE") {
				if f, ok := new(big.Float).SetPrec(0).SetString(lit); ok {
					size += max(len(f.Text('f', -1))-len(lit), 0)
				}
			}
			i = j - 1
		}
	}
	return size, nul
}

// checkWaitTimeout validates an own progress, queue or start timeout (zero: none).
func checkWaitTimeout(field string, d time.Duration) error {
	if d != 0 && (d < MinWaitTimeout || d > MaxWaitTimeout) {
		return &FieldError{Field: field,
			Reason: fmt.Sprintf("must be between %s and %s, got %s", MinWaitTimeout, MaxWaitTimeout, d)}
	}
	return nil
}

// HeartbeatProgress is Heartbeat with a progress report: a JSON object of at
// most MaxProgressBytes that replaces the stored one (nil leaves it as it
// is). progress_at moves only when the value changes (JSON equality: key
// order and spacing do not count), so a worker that reports the same
// progress again is still stalled after the progress timeout.
func (l *Ledger) HeartbeatProgress(ctx context.Context, id string, progress json.RawMessage) (HeartbeatResult, error) {
	if err := checkID("delegation_id", id); err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat: %w", err)
	}
	p, err := checkProgress("progress", progress)
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat: %w", err)
	}
	var st Status
	err = l.db.QueryRow(ctx, heartbeatSQL, id, nonTerminalNames, p).Scan(&st)
	if err == nil {
		return HeartbeatResult{Live: true, Status: st}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return HeartbeatResult{}, wrapDBError(fmt.Sprintf("heartbeat of delegation %q", id), err)
	}
	var reason string
	err = l.db.QueryRow(ctx, selectStatusReasonSQL, id).Scan(&st, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return HeartbeatResult{}, nil
	}
	if err != nil {
		return HeartbeatResult{}, wrapDBError(fmt.Sprintf("reading status of delegation %q", id), err)
	}
	return HeartbeatResult{Live: false, Status: st, Reason: reason}, nil
}

// HeartbeatBeats is HeartbeatMany with a progress report per delegation
// (Beat.Progress, as for HeartbeatProgress). Of several beats of one
// delegation, the last one's progress is recorded. An invalid id or
// progress refuses the whole call with a *FieldError naming the beat
// (beats[i].progress), before anything is written.
func (l *Ledger) HeartbeatBeats(ctx context.Context, beats []Beat) (notLive []string, err error) {
	return l.heartbeatBeats(ctx, "", beats)
}

// HeartbeatBeatsFor is HeartbeatBeats limited to the delegations of one
// callee, as HeartbeatManyFor is.
func (l *Ledger) HeartbeatBeatsFor(ctx context.Context, calleeID string, beats []Beat) (notLive []string, err error) {
	if err := checkID("callee_id", calleeID); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return l.heartbeatBeats(ctx, calleeID, beats)
}

// heartbeatBeats runs heartbeatManySQL for beats, limited to callee's rows
// when callee is not empty, and returns the ids that were not live.
func (l *Ledger) heartbeatBeats(ctx context.Context, callee string, beats []Beat) (notLive []string, err error) {
	live, err := l.heartbeatGuarded(ctx, beats, func(int) string { return callee })
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(beats))
	for _, b := range beats {
		if _, ok := live[b.ID]; !ok && !seen[b.ID] {
			seen[b.ID] = true
			notLive = append(notLive, b.ID)
		}
	}
	slices.Sort(notLive)
	return notLive, nil
}

// heartbeatGuarded runs heartbeatManySQL for beats, each limited to the
// delegations of calleeOf(i) when that is not empty (a worker's beats:
// the guard is in the statement, so a beat on another callee's delegation
// writes nothing), and returns the live ids with their status. Of several
// beats of one id, the last one with a progress wins, and the last one's
// guard applies: callers give one id one guard (the Coalescer keeps a
// beat with another guard for its next batch).
func (l *Ledger) heartbeatGuarded(ctx context.Context, beats []Beat, calleeOf func(i int) string) (live map[string]Status, err error) {
	if len(beats) == 0 {
		return nil, nil
	}
	type beat struct {
		id, callee string
		progress   *string
	}
	all := make([]beat, len(beats))
	withProgress := false
	for i, b := range beats {
		// The field names are built only for an error: a worker beating
		// thousands of rows a second should not format two strings a beat.
		if err := checkID("", b.ID); err != nil {
			return nil, fmt.Errorf("heartbeat: %w", named(err, "delegation_ids[%d]", i))
		}
		p, err := checkProgress("", b.Progress)
		if err != nil {
			return nil, fmt.Errorf("heartbeat: %w", named(err, "beats[%d].progress", i))
		}
		withProgress = withProgress || p != nil
		all[i] = beat{b.ID, calleeOf(i), p}
	}
	// Sorted and unique: concurrent batches then lock rows in the same
	// order.
	slices.SortStableFunc(all, func(a, b beat) int { return strings.Compare(a.id, b.id) })
	ids := make([]string, 0, len(all))
	callees := make([]string, 0, len(all))
	var progress []*string
	if withProgress {
		progress = make([]*string, 0, len(all))
	}
	for i, b := range all {
		if i > 0 && b.id == all[i-1].id {
			if b.progress != nil && withProgress {
				progress[len(progress)-1] = b.progress
			}
			callees[len(callees)-1] = b.callee
			continue
		}
		ids = append(ids, b.id)
		callees = append(callees, b.callee)
		if withProgress {
			progress = append(progress, b.progress)
		}
	}
	rows, err := l.db.Query(ctx, heartbeatManySQL, ids, nonTerminalNames, progress, callees)
	if err != nil {
		return nil, wrapDBError("heartbeat of many delegations", err)
	}
	live = make(map[string]Status, len(ids))
	var id string
	var st Status
	_, err = pgx.ForEachRow(rows, []any{&id, &st}, func() error {
		live[id] = st
		return nil
	})
	if err != nil {
		return nil, wrapDBError("heartbeat of many delegations", err)
	}
	return live, nil
}

// beatsOf is ids as Beats without progress.
func beatsOf(ids []string) []Beat {
	beats := make([]Beat, len(ids))
	for i, id := range ids {
		beats[i] = Beat{ID: id}
	}
	return beats
}
