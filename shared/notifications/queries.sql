-- The notifications context's statements (tables: notifications, notification_deliveries,
-- notification_settings, slack_action_nonces).

-- name: settings
SELECT email_enabled, slack_webhook_sealed, slack_signing_sealed, slack_bot_sealed
FROM notification_settings WHERE org_id = %s;

-- name: put_settings
INSERT INTO notification_settings (org_id, email_enabled, slack_webhook_sealed, slack_signing_sealed,
                                   slack_bot_sealed)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (org_id) DO UPDATE SET email_enabled = EXCLUDED.email_enabled,
    slack_webhook_sealed = EXCLUDED.slack_webhook_sealed, slack_signing_sealed = EXCLUDED.slack_signing_sealed,
    slack_bot_sealed = EXCLUDED.slack_bot_sealed, updated_at = now();

-- name: insert_notification
INSERT INTO notifications (id, org_id, user_id, event, subject, body, data, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s);

-- name: insert_delivery
INSERT INTO notification_deliveries (id, org_id, channel, destination, event, payload, next_attempt_at)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s);

-- name: notifications_page
SELECT id, org_id, event, subject, body, data, read_at, created_at FROM notifications
WHERE user_id = %s AND (NOT %s OR read_at IS NULL)
  AND (%s::timestamptz IS NULL OR (created_at, id) < (%s::timestamptz, %s::text))
ORDER BY created_at DESC, id DESC LIMIT %s;

-- name: mark_read
UPDATE notifications SET read_at = coalesce(read_at, %s) WHERE id = %s AND user_id = %s
RETURNING id, org_id, event, subject, body, data, read_at, created_at;

-- name: claim_due
-- Due deliveries, leased for a minute (a crashed sender's rows come back), attempt counted.
UPDATE notification_deliveries SET next_attempt_at = %s, attempts = attempts + 1
WHERE id IN (SELECT id FROM notification_deliveries WHERE status = 'pending' AND next_attempt_at <= %s
             ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, org_id, channel, destination, event, payload, attempts;

-- name: delivered
UPDATE notification_deliveries SET status = 'delivered', delivered_at = %s, last_error = NULL WHERE id = %s;

-- name: retry_later
UPDATE notification_deliveries SET next_attempt_at = %s, last_error = %s WHERE id = %s;

-- name: give_up
UPDATE notification_deliveries SET status = 'failed', last_error = %s WHERE id = %s;

-- name: deliveries_of
SELECT id, channel, destination, event, status, attempts, last_error FROM notification_deliveries
WHERE org_id = %s ORDER BY created_at, id;

-- name: remember_signature
INSERT INTO slack_action_nonces (signature) VALUES (%s) ON CONFLICT DO NOTHING RETURNING signature;

-- name: forget_old_signatures
DELETE FROM slack_action_nonces WHERE created_at < %s;
