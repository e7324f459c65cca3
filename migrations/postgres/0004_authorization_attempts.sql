-- One row per click on Authorize: the state (as a digest), what it is bound to, and how it
-- ended. The PKCE verifier is sealed in `secrets` under the attempt's id.
CREATE TABLE authorization_attempts (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    mailbox_id      TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    state_digest    TEXT NOT NULL UNIQUE,
    session_digest  TEXT,
    started_by      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'expired')),
    reason          TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX authorization_attempts_mailbox ON authorization_attempts(mailbox_id, id);
