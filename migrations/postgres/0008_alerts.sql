-- Alerts: what an organization's admins must hear about (a mailbox turning Not Verified, a
-- client secret expiring, a message failing, a keep-alive failing). One row per occurrence,
-- unique by its key so that repeats are suppressed; shown as a banner until resolved or
-- dismissed, emailed to the organization's admins and delivered to its webhook.
CREATE TABLE alerts (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind                TEXT NOT NULL,
    dedup_key           TEXT NOT NULL,
    mailbox_id          TEXT,
    message_id          TEXT,
    title               TEXT NOT NULL,
    detail              TEXT NOT NULL,
    action              TEXT,
    created_at          BIGINT NOT NULL,
    resolved_at         BIGINT,
    dismissed_at        BIGINT,
    -- none (no webhook when raised), pending, delivered or failed (gave up).
    webhook_status      TEXT NOT NULL DEFAULT 'none',
    webhook_attempts    BIGINT NOT NULL DEFAULT 0,
    webhook_next_at     BIGINT,
    webhook_last_error  TEXT,
    -- The email to the organization's admins: pending, queued (as email_message_id),
    -- or skipped (email_error says why).
    email_status        TEXT NOT NULL DEFAULT 'pending',
    -- When an instance took the email to write it (another may take it over after 10 minutes).
    email_taken_at      BIGINT,
    email_message_id    TEXT,
    email_error         TEXT,
    UNIQUE (org_id, dedup_key)
);
CREATE INDEX alerts_webhook_due ON alerts(webhook_status, webhook_next_at);
CREATE INDEX alerts_open ON alerts(org_id, resolved_at, dismissed_at);
CREATE INDEX alerts_email_due ON alerts(email_status);
CREATE INDEX alerts_mailbox ON alerts(mailbox_id, kind);

-- Where the organization's alerts are POSTed (its signing secret is sealed with the others).
ALTER TABLE organizations ADD COLUMN alert_webhook_url TEXT;
