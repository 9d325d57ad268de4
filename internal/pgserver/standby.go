package pgserver

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// StandbyApplicationNameDefault is the application_name a standby connects
// to its primary with when StandbyOptions.ApplicationName is empty.
const StandbyApplicationNameDefault = "standby1"

// StandbyOptions tunes StartStandby. The zero value is an asynchronous
// streaming standby without replication slot.
type StandbyOptions struct {
	// Synchronous makes the primary wait for the standby on every commit:
	// StartStandby sets the primary's synchronous_standby_names to the
	// standby's application name (ALTER SYSTEM, pg_reload_conf) and waits
	// until pg_stat_replication shows it "sync". The primary must then run
	// with synchronous_commit on (Options.Settings of its Start), since the
	// throwaway default (off) waits for no one; StartStandby refuses
	// otherwise.
	Synchronous bool

	// ApplicationName names the standby in pg_stat_replication and
	// synchronous_standby_names; empty means StandbyApplicationNameDefault.
	// Letters, digits and underscores only.
	ApplicationName string

	// Slot, when not empty, is a physical replication slot that
	// pg_basebackup creates on the primary and the standby streams from, so
	// that the primary keeps the WAL the standby has not received yet.
	// Letters, digits and underscores only.
	Slot string

	// Settings are extra server settings of the standby, as in
	// Options.Settings; nil means the primary's Options.Settings.
	Settings map[string]string

	// Logf receives progress messages; nil means the primary's.
	Logf func(format string, args ...any)

	// StartTimeout bounds the base backup, start-up and the wait for
	// streaming; zero means StartTimeoutDefault.
	StartTimeout time.Duration
}

// identifier is what ApplicationName and Slot may hold: they go into
// synchronous_standby_names and slot names unquoted.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Promote ends recovery on a standby (pg_promote, waiting until it is done):
// the server then accepts writes. A server that is not in recovery returns an
// error saying so.
func (s *Server) Promote(ctx context.Context) error {
	conn, err := pgconn.Connect(ctx, s.URL)
	if err != nil {
		return fmt.Errorf("promoting: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Exec(ctx, "SELECT pg_is_in_recovery()").ReadAll()
	if err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	if string(rows[0].Rows[0][0]) != "t" {
		return errors.New("promoting: the server is not a standby (not in recovery)")
	}
	rows, err = conn.Exec(ctx, "SELECT pg_promote(wait => true, wait_seconds => 60)").ReadAll()
	if err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	if string(rows[0].Rows[0][0]) != "t" {
		return errors.New("promoting: pg_promote returned false: not promoted within 60 seconds")
	}
	return nil
}

// checkSynchronousCommit refuses a synchronous standby of a primary whose
// synchronous_commit is off: its commits would not wait for the standby.
func checkSynchronousCommit(ctx context.Context, url string) error {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("starting a standby: connecting to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Exec(ctx, "SHOW synchronous_commit").ReadAll()
	if err != nil {
		return fmt.Errorf("starting a standby: %w", err)
	}
	if v := string(rows[0].Rows[0][0]); v == "off" || v == "local" {
		return fmt.Errorf("starting a synchronous standby: the primary runs with synchronous_commit=%s, so its commits"+
			" would not wait for the standby; start it with Options.Settings{\"synchronous_commit\": \"on\"}", v)
	}
	return nil
}

// waitStreaming makes the primary wait for the standby named app on commit
// when sync, then waits until pg_stat_replication shows the standby
// streaming (sync: with sync_state "sync").
func waitStreaming(ctx context.Context, primaryURL, app string, sync bool) error {
	conn, err := pgconn.Connect(ctx, primaryURL)
	if err != nil {
		return fmt.Errorf("waiting for streaming: connecting to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if sync {
		// app is an identifier (checked), so it can be part of the text.
		sql := fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", app)
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			return fmt.Errorf("setting synchronous_standby_names on the primary: %w", err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()").ReadAll(); err != nil {
			return fmt.Errorf("reloading the primary's configuration: %w", err)
		}
	}
	want := "async"
	if sync {
		want = "sync"
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "no row in pg_stat_replication"
	for {
		rr := conn.ExecParams(ctx, "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
			[][]byte{[]byte(app)}, nil, nil, nil).Read()
		if rr.Err != nil {
			return fmt.Errorf("reading pg_stat_replication: %w", rr.Err)
		}
		if len(rr.Rows) > 0 {
			state, syncState := string(rr.Rows[0][0]), string(rr.Rows[0][1])
			if state == "streaming" && syncState == want {
				return nil
			}
			last = fmt.Sprintf("state %s, sync_state %s", state, syncState)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("standby %s not streaming (%s) from the primary: %w (last seen: %s)", app, want, ctx.Err(), last)
		case <-tick.C:
		}
	}
}
