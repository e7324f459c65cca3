-- Several instances on one database: which instance made a message's last attempt, so that an
-- operator (and the tests) can see the work shared out.
ALTER TABLE messages ADD COLUMN attempted_by TEXT;

-- Keep-alive: when an OAuth2 mailbox's token was last refreshed on purpose, so that an idle
-- mailbox's refresh token does not expire unused. Taken by one instance at a time.
ALTER TABLE mailboxes ADD COLUMN keepalive_at BIGINT;
