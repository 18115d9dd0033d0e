-- The secrets context's statements: the wrapped data keys of each owner (an org, or 'platform').
-- shared/secrets/service.py loads them with Queries("shared.secrets").

-- name: current_key
-- The owner's newest data key (the one new seals use).
SELECT version, wrapped_key, kek_version FROM secret_keys WHERE owner = %s ORDER BY version DESC LIMIT 1;

-- name: key_version
-- One data key of an owner, by version (what a sealed value names).
SELECT version, wrapped_key, kek_version FROM secret_keys WHERE owner = %s AND version = %s;

-- name: insert_first_key
-- The owner's first data key; a concurrent first seal's insert wins quietly (both then read it).
INSERT INTO secret_keys (owner, version, wrapped_key, kek_version) VALUES (%s, 1, %s, %s)
ON CONFLICT (owner, version) DO NOTHING;

-- name: insert_key
-- A further data key version of an owner (a rotation); a concurrent rotation to the same version fails.
INSERT INTO secret_keys (owner, version, wrapped_key, kek_version) VALUES (%s, %s, %s, %s);

-- name: keys_to_rewrap
-- Data keys wrapped by another KEK version than the current one, in (owner, version) order after a
-- given position, locked for the re-wrap (another re-wrapping process skips them).
-- Parameters: current KEK version, after owner, after owner, after version, limit.
SELECT owner, version, wrapped_key, kek_version FROM secret_keys
WHERE kek_version <> %s AND (owner > %s OR (owner = %s AND version > %s))
ORDER BY owner, version LIMIT %s FOR UPDATE SKIP LOCKED;

-- name: rewrap_key
-- Store a data key wrapped again by the current KEK version (the key itself does not change).
UPDATE secret_keys SET wrapped_key = %s, kek_version = %s, rewrapped_at = now() WHERE owner = %s AND version = %s;
