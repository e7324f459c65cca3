-- Failed logins (web sign-in, SMTP relay AUTH), kept in the database so that every instance
-- counts them together: spreading guesses over several instances gains an attacker nothing.
CREATE TABLE auth_failures (
    id         TEXT PRIMARY KEY,
    scope_key  TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX auth_failures_key ON auth_failures(scope_key, at);
CREATE INDEX auth_failures_at ON auth_failures(at);
