-- Per-organization limits: which organizations the installation's default sender serves when
-- HERALD_DEFAULT_SENDER_ORGS=listed, how many messages it sent for each per UTC day (a counter
-- shared by every instance, raised atomically before a message is stored), and an index over
-- the mail still waiting, so that the queue limits are one small indexed query per accept.
ALTER TABLE organizations ADD COLUMN default_sender_allowed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE default_sender_usage (
    org_id  TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- Days since 1970-01-01, UTC.
    day     BIGINT NOT NULL,
    sent    BIGINT NOT NULL,
    PRIMARY KEY (org_id, day)
);

CREATE INDEX messages_org_waiting ON messages(org_id, status, size) WHERE status IN ('queued', 'sending', 'held');
