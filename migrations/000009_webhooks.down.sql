-- Reverts version 9: the webhook subscriptions, their delivery log and the
-- delegations' traceparent.
ALTER TABLE delegations DROP CONSTRAINT delegations_traceparent_check, DROP COLUMN traceparent;
DROP TABLE webhook_attempts;
DROP TABLE webhook_subscriptions;
