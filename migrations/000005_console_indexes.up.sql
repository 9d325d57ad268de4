-- sweeper schema, version 5: the console's stuck counts read from an index
-- alone (issue 11, "fast at size").
--
-- The overview counts the stuck transitions of the last day by reason and
-- minute, for one caller, one callee or everyone; the live page reads the
-- newest ones. Over idx_delegation_events_to_status (to_status, tx_id, id)
-- each of the day's stuck events is a heap fetch. This index holds only
-- stuck events (a few percent of the log, so the retention prune, which
-- deletes events, pays for few entries) and every column the counts read:
-- events are append-only, so once vacuumed their pages are all-visible and
-- the counts are index-only scans. Its key (tx_id, id) is the feed's order,
-- so the live page's newest stuck events are its last entries.
-- idx_delegation_events_to_status stays: the feed's to_status filter reads
-- it for every status.
--
-- The migration runs in a transaction, so the index is not built
-- CONCURRENTLY: writes of events wait for one read of delegation_events.
CREATE INDEX idx_delegation_events_stuck
    ON delegation_events (tx_id, id)
    INCLUDE (at, reason, caller_id, callee_id)
    WHERE to_status = 'stuck';
