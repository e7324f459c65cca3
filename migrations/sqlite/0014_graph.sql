-- How a mailbox's messages reach the provider: SMTP submission or Microsoft Graph `sendMail`
-- (which works where SMTP AUTH is turned off), Graph's base URL, and whether Graph keeps a copy
-- in Sent Items.
ALTER TABLE mailboxes ADD COLUMN transport TEXT NOT NULL DEFAULT 'smtp';
ALTER TABLE mailboxes ADD COLUMN graph_url TEXT;
ALTER TABLE mailboxes ADD COLUMN save_to_sent_items INTEGER NOT NULL DEFAULT 1;
