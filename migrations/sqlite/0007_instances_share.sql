-- Several instances on one database: which instance made a message's last attempt, so that an
-- operator (and the tests) can see the work shared out.
ALTER TABLE messages ADD COLUMN attempted_by TEXT;
