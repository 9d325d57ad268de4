-- Back to version 4: the stuck counts read idx_delegation_events_to_status.
DROP INDEX idx_delegation_events_stuck;
