-- A queued or held message can be cancelled by its organization: `cancelled` is a final status.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt (nothing references
-- it), with the column 0007 added.
CREATE TABLE messages_new (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- The mailbox it leaves through; NULL while held for an organization with no mailbox yet.
    mailbox_id          TEXT REFERENCES mailboxes(id) ON DELETE SET NULL,
    -- The caller named the mailbox: held mail then waits for that mailbox alone.
    mailbox_explicit    INTEGER NOT NULL DEFAULT 0,
    -- Sent from the installation's default sender on the organization's behalf.
    via_default_sender  INTEGER NOT NULL DEFAULT 0,
    api_key_id          TEXT,
    source              TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'held', 'cancelled')),
    mail_from           TEXT NOT NULL,
    recipients          TEXT NOT NULL,
    recipient_count     INTEGER NOT NULL,
    subject             TEXT NOT NULL,
    message_id_header   TEXT NOT NULL,
    body_kind           TEXT NOT NULL CHECK (body_kind IN ('draft', 'mime')),
    body                BLOB,
    size                INTEGER NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_until         INTEGER,
    last_code           INTEGER,
    last_enhanced       TEXT,
    last_text           TEXT,
    reason              TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    sent_at             INTEGER,
    finished_at         INTEGER,
    purged_at           INTEGER,
    attempted_by        TEXT
);

INSERT INTO messages_new (id, org_id, mailbox_id, mailbox_explicit, via_default_sender, api_key_id, source, status, mail_from, recipients, recipient_count, subject, message_id_header, body_kind, body, size, attempts, next_attempt_at, lease_owner, lease_until, last_code, last_enhanced, last_text, reason, created_at, updated_at, sent_at, finished_at, purged_at, attempted_by)
SELECT id, org_id, mailbox_id, mailbox_explicit, via_default_sender, api_key_id, source, status, mail_from, recipients, recipient_count, subject, message_id_header, body_kind, body, size, attempts, next_attempt_at, lease_owner, lease_until, last_code, last_enhanced, last_text, reason, created_at, updated_at, sent_at, finished_at, purged_at, attempted_by FROM messages;

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_org ON messages(org_id, id);
CREATE INDEX messages_due ON messages(status, next_attempt_at);
CREATE INDEX messages_mailbox ON messages(mailbox_id, status, next_attempt_at);
CREATE INDEX messages_finished ON messages(finished_at) WHERE body IS NOT NULL;
