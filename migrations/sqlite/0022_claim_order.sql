-- A lane claims a mailbox's next messages in the order they came in: by time, then by id
-- (UUIDv7), straight from the index, without sorting every due message.
CREATE INDEX messages_mailbox_order ON messages(mailbox_id, status, next_attempt_at, id);
DROP INDEX messages_mailbox;
