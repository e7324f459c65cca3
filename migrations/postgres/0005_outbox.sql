-- The durable outbox: accepted messages, idempotency keys, per-mailbox throttle state and
-- connection slots, per-mailbox limit overrides, organization sending settings, and API keys
-- limited to some mailboxes.

CREATE TABLE messages (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- The mailbox it leaves through; NULL while held for an organization with no mailbox yet.
    mailbox_id          TEXT REFERENCES mailboxes(id) ON DELETE SET NULL,
    -- The caller named the mailbox: held mail then waits for that mailbox alone.
    mailbox_explicit    BIGINT NOT NULL DEFAULT 0,
    -- Sent from the installation's default sender on the organization's behalf.
    via_default_sender  BIGINT NOT NULL DEFAULT 0,
    api_key_id          TEXT,
    source              TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'held')),
    mail_from           TEXT NOT NULL,
    recipients          TEXT NOT NULL,
    recipient_count     BIGINT NOT NULL,
    subject             TEXT NOT NULL,
    message_id_header   TEXT NOT NULL,
    body_kind           TEXT NOT NULL CHECK (body_kind IN ('draft', 'mime')),
    body                BYTEA,
    size                BIGINT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_until         BIGINT,
    last_code           BIGINT,
    last_enhanced       TEXT,
    last_text           TEXT,
    reason              TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    sent_at             BIGINT,
    finished_at         BIGINT,
    purged_at           BIGINT
);
CREATE INDEX messages_org ON messages(org_id, id);
CREATE INDEX messages_due ON messages(status, next_attempt_at);
CREATE INDEX messages_mailbox ON messages(mailbox_id, status, next_attempt_at);
CREATE INDEX messages_finished ON messages(finished_at) WHERE body IS NOT NULL;

CREATE TABLE idempotency_keys (
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    idem_key        TEXT NOT NULL,
    request_digest  TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    first_status    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (org_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);

-- Shared by every instance: sends of the last minute (milliseconds), per-hour counts of the
-- last day, and a back-off after a rate-limit reply.
CREATE TABLE mailbox_throttle (
    mailbox_id      TEXT PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    recent_sends    TEXT NOT NULL DEFAULT '[]',
    hourly          TEXT NOT NULL DEFAULT '[]',
    backoff_until   BIGINT NOT NULL DEFAULT 0,
    backoff_level   BIGINT NOT NULL DEFAULT 0
);

-- One row per open SMTP connection to a mailbox, held under a lease (milliseconds).
CREATE TABLE mailbox_connections (
    mailbox_id   TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    slot         BIGINT NOT NULL,
    holder       TEXT NOT NULL,
    lease_until  BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, slot)
);

ALTER TABLE mailboxes ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';

ALTER TABLE organizations ADD COLUMN no_mailbox_policy TEXT NOT NULL DEFAULT 'fallback';
ALTER TABLE organizations ADD COLUMN reply_to TEXT;

ALTER TABLE api_keys ADD COLUMN mailbox_limited BIGINT NOT NULL DEFAULT 0;
CREATE TABLE api_key_mailboxes (
    api_key_id  TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    mailbox_id  TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    PRIMARY KEY (api_key_id, mailbox_id)
);

-- Where an instance's pid means something: boot id and pid namespace. A restarted instance
-- releases the claims of one in its own scope whose process is gone.
ALTER TABLE instances ADD COLUMN scope TEXT NOT NULL DEFAULT '';
