-- Certificate credentials (private_key_jwt): the certificate in use and a renewed one waiting
-- to take over, as JSON (PEM, thumbprints, validity). Their private keys are sealed in
-- `secrets`. `client_auth` names the credential: 'secret' (was 'post'), 'basic', 'certificate'.
ALTER TABLE mailboxes ADD COLUMN certificate TEXT;
ALTER TABLE mailboxes ADD COLUMN next_certificate TEXT;
UPDATE mailboxes SET client_auth = 'secret' WHERE client_auth = 'post';
