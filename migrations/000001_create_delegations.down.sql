DROP TABLE IF EXISTS delegation_events;
DROP TABLE IF EXISTS delegations;
DROP FUNCTION IF EXISTS sweeper_delegation_events_append_only();
DROP FUNCTION IF EXISTS sweeper_delegations_audit();
DROP FUNCTION IF EXISTS sweeper_delegations_touch();
DROP FUNCTION IF EXISTS sweeper_delegations_guard();
DROP FUNCTION IF EXISTS sweeper_status_rank(text);
