-- Running `herald serve` processes announce themselves here, so that operations that must not
-- run beside them (a master key rotation) can tell.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
