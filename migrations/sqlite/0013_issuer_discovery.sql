-- The authorization server advertised `authorization_response_iss_parameter_supported` in its
-- discovery document (RFC 9207): a redirect without `iss` is then refused.
ALTER TABLE mailboxes ADD COLUMN iss_required INTEGER NOT NULL DEFAULT 0;
