-- Microsoft's cloud per mailbox: the global one or a national cloud (usgov, dod, china), which
-- sets the sign-in, Graph and SMTP hosts together.
ALTER TABLE mailboxes ADD COLUMN cloud TEXT NOT NULL DEFAULT 'global';
