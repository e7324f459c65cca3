-- Sending mailboxes. Their secrets (client secret, password, tokens) are sealed in `secrets`,
-- keyed by the mailbox id.
CREATE TABLE mailboxes (
    id                        TEXT PRIMARY KEY,
    org_id                    TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                      TEXT NOT NULL,
    name_key                  TEXT NOT NULL,
    auth                      TEXT NOT NULL CHECK (auth IN ('oauth2', 'basic')),
    provider                  TEXT NOT NULL,
    tenant                    TEXT,
    host                      TEXT NOT NULL,
    port                      BIGINT NOT NULL,
    security                  TEXT NOT NULL CHECK (security IN ('starttls', 'tls', 'none')),
    username                  TEXT NOT NULL,
    from_name                 TEXT,
    sign_in_account           TEXT NOT NULL,
    reply_to                  TEXT,
    signature                 TEXT,
    is_default                BIGINT NOT NULL DEFAULT 0,
    authorization_url         TEXT,
    token_url                 TEXT,
    client_id                 TEXT,
    client_auth               TEXT NOT NULL DEFAULT 'post',
    scopes                    TEXT NOT NULL DEFAULT '',
    issuer                    TEXT,
    client_secret_expires_at  TEXT,
    status                    TEXT NOT NULL,
    status_reason             TEXT,
    verified_at               BIGINT,
    token_expires_at          BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    UNIQUE (org_id, name_key)
);
CREATE INDEX mailboxes_org ON mailboxes(org_id, id);
-- At most one default mailbox per organization.
CREATE UNIQUE INDEX mailboxes_default ON mailboxes(org_id) WHERE is_default = 1;
