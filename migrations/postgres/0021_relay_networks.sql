-- Relay credentials for devices that cannot log in: bound to client networks only, no AUTH.
ALTER TABLE relay_credentials ADD COLUMN network_only INTEGER NOT NULL DEFAULT 0;
