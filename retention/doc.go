// Package retention deletes old terminal delegations, with all their events,
// so that a ledger can run for years in tables that stay small.
//
// A delegation is eligible when it is terminal (completed, failed or stuck)
// and its finished_at, the moment it became terminal as recorded by the
// database, is older than the retention of its status (Config.Completed,
// Config.Failed, Config.Stuck; KeepForever keeps a status for ever). Nothing
// else is ever deleted: the database itself refuses the DELETE of a row that
// is not terminal, and refuses every DELETE of delegation_events except the
// one that takes the events of a deleted delegation with it (see
// docs/design.md, "Retention").
//
// A Pruner deletes in batches of Config.BatchSize delegations, one
// transaction per batch, through the schema's sweeper_prune function
// (SECURITY DEFINER: the daemon's role needs no DELETE privilege). With
// Config.ArchiveDir set, each batch's rows and events are first written to a
// gzip JSON Lines file there, flushed and fsynced before the batch's delete
// commits; a crash between the two leaves the batch in the archive and in
// the database, and the next run archives it again: duplicates, never a
// loss. VerifyArchive checks such files.
//
// Call RunOnce for one full pass, or Start/Stop to prune on a schedule.
// Several pruners may run at once: rows are claimed with FOR UPDATE SKIP
// LOCKED.
package retention
