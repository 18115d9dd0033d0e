-- The webhooks context's statements (it owns webhooks, webhook_events, webhook_deliveries and
-- webhook_attempts).

-- name: emit
-- An event and its deliveries, for every active webhook of the org subscribed to its type, in one
-- statement; nothing at all when none is. KEY SHARE: a webhook deleted concurrently is skipped
-- rather than failing the caller's transaction on the foreign key. A delivery's id is the event
-- id's time part (so ``id_time`` reads when it was made) followed by a digest of the event and
-- webhook ids, spelled in base32 letters: one per (event, webhook), made here.
-- Parameters: org, type, event id, org, type, data, delivery id prefix, org.
WITH hooks AS (
    SELECT id FROM webhooks
    WHERE org_id = %s AND status = 'active' AND events @> jsonb_build_array(%s::text)
    FOR KEY SHARE
), event AS (
    INSERT INTO webhook_events (id, org_id, type, data)
    SELECT %s, %s, %s, %s::jsonb WHERE EXISTS (SELECT FROM hooks)
    RETURNING id
)
INSERT INTO webhook_deliveries (id, event_id, webhook_id, org_id, next_attempt_at)
SELECT %s || translate(left(md5(event.id || '/' || hooks.id), 16), '0123456789abcdef', 'abcdefghijklmnop'),
       event.id, hooks.id, %s, now()
FROM event CROSS JOIN hooks
RETURNING event_id;

-- name: count_webhooks
-- How many webhooks the org has. Parameters: org.
SELECT count(*) FROM webhooks WHERE org_id = %s;

-- name: insert_webhook
-- A new webhook. Parameters: id, org, url, events (JSON), description, sealed secret, created by.
INSERT INTO webhooks (id, org_id, url, events, description, secret_sealed, created_by)
VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)
RETURNING id, org_id, url, events, description, status, disabled_reason, disabled_at, created_by, created_at;

-- name: webhooks_page
-- A page of the org's webhooks, newest first (kernel Keyset), never their secrets.
-- Parameters: org, the Keyset's three, limit.
SELECT id, org_id, url, events, description, status, disabled_reason, disabled_at, created_by, created_at
FROM webhooks
WHERE org_id = %s AND (%s::timestamptz IS NULL OR (created_at, id) < (%s::timestamptz, %s::text))
ORDER BY created_at DESC, id DESC LIMIT %s;

-- name: webhook
-- One webhook of the org, if any. Parameters: webhook id, org.
SELECT id, org_id, url, events, description, status, disabled_reason, disabled_at, created_by, created_at
FROM webhooks WHERE id = %s AND org_id = %s;

-- name: delete_webhook
-- Remove a webhook (its deliveries and attempts go with it, by cascade). Parameters: webhook id, org.
DELETE FROM webhooks WHERE id = %s AND org_id = %s RETURNING url, events;

-- name: attempts_page
-- A page of a webhook's delivery attempts, newest first, keyed by (started_at, id) in the kernel's
-- Keyset shape. Parameters: webhook id, org, started_at or NULL, started_at or NULL, id or NULL, limit.
SELECT a.id, a.delivery_id, d.event_id, e.type AS event_type, a.attempt, a.status_code, a.error,
       a.response_excerpt, a.duration_ms, a.started_at, a.finished_at, d.status AS delivery_status,
       CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at
FROM webhook_attempts a
JOIN webhook_deliveries d ON d.id = a.delivery_id
JOIN webhook_events e ON e.id = d.event_id
WHERE a.webhook_id = %s AND a.org_id = %s
  AND (%s::timestamptz IS NULL OR (a.started_at, a.id) < (%s::timestamptz, %s::text))
ORDER BY a.started_at DESC, a.id DESC LIMIT %s;

-- name: claim_due
-- Claims up to $limit due deliveries of active webhooks and leases them: attempts + 1, and
-- next_attempt_at pushed to the lease's end, so a dispatcher that dies mid-attempt only delays
-- the delivery until then. A fresh lease token per claim lets only the claimer record the outcome.
-- Parameters: limit, lease seconds.
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'active'
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT %s
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => %s),
        lease_token = gen_random_uuid()::text
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.event_id, d.webhook_id, d.org_id, d.attempts, d.lease_token
)
SELECT c.id, c.event_id, c.webhook_id, c.org_id, c.attempts, c.lease_token,
       e.type AS event_type, e.data, e.occurred_at, w.url, w.secret_sealed
FROM claimed c
JOIN webhook_events e ON e.id = c.event_id
JOIN webhooks w ON w.id = c.webhook_id;

-- name: retry_delivery
-- A failed attempt with attempts left: due again after the delay, if the claimer still holds it.
-- Parameters: delay seconds, status code, error, delivery id, lease token.
UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => %s),
       lease_token = NULL, last_status_code = %s, last_error = %s
WHERE id = %s AND lease_token = %s AND status = 'pending';

-- name: finish_delivery
-- A delivery's final outcome (delivered or failed), if the claimer still holds it.
-- Parameters: status, status code, error, delivery id, lease token.
UPDATE webhook_deliveries SET status = %s, next_attempt_at = NULL, lease_token = NULL,
       last_status_code = %s, last_error = %s, finished_at = now()
WHERE id = %s AND lease_token = %s AND status = 'pending';

-- name: insert_attempt
-- One recorded attempt. Parameters: id, delivery id, webhook id, org, attempt, status code, error,
-- response excerpt, duration (ms), started at, finished at.
INSERT INTO webhook_attempts (id, delivery_id, webhook_id, org_id, attempt, status_code, error,
                              response_excerpt, duration_ms, started_at, finished_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: disable_webhook
-- Stop delivering to an active webhook. Parameters: reason, webhook id.
UPDATE webhooks SET status = 'disabled', disabled_reason = %s, disabled_at = now()
WHERE id = %s AND status = 'active';

-- name: cancel_pending_deliveries
-- Every pending delivery of a webhook is cancelled. Parameters: webhook id.
UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_token = NULL,
       finished_at = now()
WHERE webhook_id = %s AND status = 'pending';

-- name: purge_events
-- At most a batch of events older than the cutoff that nothing still waits to deliver (their
-- deliveries and attempts go with them, by cascade); rows another purge holds are skipped, so two
-- purges running at once share the work. Parameters: age in seconds, batch size.
DELETE FROM webhook_events WHERE id IN (
  SELECT e.id FROM webhook_events e WHERE e.occurred_at < now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
  ORDER BY e.occurred_at LIMIT %s FOR UPDATE SKIP LOCKED);

-- name: sealed_secrets_page
-- Webhooks' sealed signing secrets in id order after a given id (the background re-seal). Parameters: after id, limit.
SELECT id, org_id, secret_sealed FROM webhooks WHERE id > %s ORDER BY id LIMIT %s;

-- name: reseal_secret
-- Store a signing secret sealed again, if the row still holds what was read. Parameters: new sealed, id, old sealed.
UPDATE webhooks SET secret_sealed = %s WHERE id = %s AND secret_sealed = %s;
