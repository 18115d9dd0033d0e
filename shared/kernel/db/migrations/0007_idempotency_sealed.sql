-- Stored responses are replayed to their caller only, and some carry a secret shown once (an API
-- key, a webhook signing secret): they now rest sealed by the secret box, never in clear. Replays
-- recorded before this migration are dropped, with the clear text they held.
ALTER TABLE idempotency_keys ADD COLUMN response_sealed bytea;
DELETE FROM idempotency_keys WHERE response IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN response;
