-- Whose access a mailbox uses: a signed-in person's (delegated), the app's own (app-only,
-- OAuth 2.0 client credentials) or a password.
ALTER TABLE mailboxes ADD COLUMN credential TEXT NOT NULL DEFAULT 'delegated';
UPDATE mailboxes SET credential = 'password' WHERE auth = 'basic';
