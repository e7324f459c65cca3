-- Where a mailbox's client-secret expiry date came from: typed by an admin, or read from the
-- app registration through Microsoft Graph (Application.Read.All).
ALTER TABLE mailboxes ADD COLUMN client_secret_expiry_source TEXT NOT NULL DEFAULT 'typed';
