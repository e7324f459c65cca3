-- Credentials of the SMTP relay: devices and programs that only speak SMTP with a password
-- send through an organization's mailboxes. Only a digest of each password is kept.
CREATE TABLE relay_credentials (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    username          TEXT NOT NULL UNIQUE,
    digest            TEXT NOT NULL,
    -- JSON array of mailbox ids: the first is used unless MAIL FROM names another.
    mailboxes         TEXT NOT NULL,
    -- JSON array of CIDR ranges the device may connect from; empty: anywhere.
    allowed_networks  TEXT NOT NULL DEFAULT '[]',
    from_policy       TEXT NOT NULL CHECK (from_policy IN ('rewrite', 'refuse')),
    keep_reply_to     BIGINT NOT NULL DEFAULT 1,
    created_at        BIGINT NOT NULL,
    last_used_at      BIGINT
);
CREATE INDEX relay_credentials_org ON relay_credentials(org_id, id);
