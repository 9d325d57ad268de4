//go:build unix

package pgserver

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// startStandbyT starts a standby of primary for one test.
func startStandbyT(t *testing.T, primary *Server, opts StandbyOptions) (*Server, *local) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := StartStandby(ctx, primary, opts)
	if err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, s.b.(*local)
}

// TestSynchronousStandbyPromoted writes on a primary, reads it on its
// synchronous standby, kills the primary, promotes the standby and writes on
// it.
func TestSynchronousStandbyPromoted(t *testing.T) {
	primary, pl := startLocalT(t, Options{Settings: map[string]string{"synchronous_commit": "on"}})
	standby, sl := startStandbyT(t, primary, StandbyOptions{Synchronous: true, Slot: "standby_slot"})
	if sl.root == pl.root || sl.port == pl.port {
		t.Fatalf("standby shares the primary's directory or port: %s:%d vs %s:%d", sl.root, sl.port, pl.root, pl.port)
	}
	ctx := context.Background()
	p := connect(t, primary.URL)
	if got := queryString(t, p, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'"); got != "sync" {
		t.Fatalf("sync_state = %q, want sync", got)
	}
	if got := queryString(t, p, "SELECT slot_name || ' ' || active FROM pg_replication_slots"); got != "standby_slot true" {
		t.Fatalf("replication slot: %q, want \"standby_slot true\"", got)
	}
	// remote_apply: the commit returns once the standby has replayed it.
	for _, sql := range []string{
		"SET synchronous_commit = remote_apply",
		"CREATE TABLE t (v text)",
		"INSERT INTO t VALUES ('before')",
	} {
		if _, err := p.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	s := connect(t, standby.URL)
	if got := queryString(t, s, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("standby pg_is_in_recovery = %s", got)
	}
	if got := queryString(t, s, "SELECT string_agg(v, ',') FROM t"); got != "before" {
		t.Fatalf("standby reads %q, want before", got)
	}
	if _, err := s.Exec(ctx, "INSERT INTO t VALUES ('on standby')"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write on standby: %v, want a read-only error", err)
	}
	if err := primary.Promote(ctx); err == nil || !strings.Contains(err.Error(), "not a standby") {
		t.Fatalf("Promote of the primary: %v, want \"not a standby\"", err)
	}

	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, s, "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Fatalf("promoted pg_is_in_recovery = %s", got)
	}
	// The promoted server waits for no synchronous standby: the setting was
	// made on the primary after the base backup.
	if _, err := s.Exec(ctx, "INSERT INTO t VALUES ('after')"); err != nil {
		t.Fatalf("write on the promoted server: %v", err)
	}
	if got := queryString(t, s, "SELECT string_agg(v, ',' ORDER BY v) FROM t"); got != "after,before" {
		t.Fatalf("promoted server reads %q, want after,before", got)
	}
}

// TestAsynchronousStandby streams to an asynchronous standby, and refuses a
// synchronous one while the primary's commits wait for no one.
func TestAsynchronousStandby(t *testing.T) {
	primary, _ := startLocalT(t, Options{})
	ctx := context.Background()
	_, err := StartStandby(ctx, primary, StandbyOptions{Synchronous: true})
	if err == nil || !strings.Contains(err.Error(), "synchronous_commit=off") {
		t.Fatalf("synchronous standby of a synchronous_commit=off primary: %v, want a refusal naming the setting", err)
	}
	if _, err := StartStandby(ctx, primary, StandbyOptions{ApplicationName: "bad name;"}); err == nil ||
		!strings.Contains(err.Error(), `"bad name;"`) {
		t.Fatalf("bad application name: %v, want an error naming it", err)
	}
	standby, sl := startStandbyT(t, primary, StandbyOptions{ApplicationName: "async_one"})
	p := connect(t, primary.URL)
	if got := queryString(t, p, "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = 'async_one'"); got != "streaming async" {
		t.Fatalf("pg_stat_replication: %q, want \"streaming async\"", got)
	}
	if _, err := p.Exec(ctx, "CREATE TABLE t AS SELECT 'streamed'::text AS v"); err != nil {
		t.Fatal(err)
	}
	// The insert position, not pg_current_wal_lsn: under synchronous_commit=off
	// the commit record may not be written yet when the statement returns.
	lsn := queryString(t, p, "SELECT pg_current_wal_insert_lsn()::text")
	s := connect(t, standby.URL)
	// No signal tells when the standby has replayed an LSN: poll, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for queryString(t, s, "SELECT (pg_last_wal_replay_lsn() >= '"+lsn+"')::text") != "true" {
		if time.Now().After(deadline) {
			t.Fatalf("standby has not replayed %s after 10s", lsn)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := queryString(t, s, "SELECT v FROM t"); got != "streamed" {
		t.Fatalf("standby reads %q", got)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, "INSERT INTO t VALUES ('promoted')"); err != nil {
		t.Fatalf("write on the promoted server: %v", err)
	}
	root := sl.root
	if err := standby.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("standby directory %s left after Close: %v", root, err)
	}
}
