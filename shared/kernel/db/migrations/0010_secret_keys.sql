-- Envelope encryption (SPEC §5 "secrets"): one data key (DEK) per owner and version, stored only
-- wrapped by the key-encryption key (KEK: a key file locally, Cloud KMS in gcp). The owner is an
-- org id, or 'platform' for what belongs to no org (idempotent replays of org-less requests).
-- A sealed value names the DEK version that sealed it, so old versions stay until nothing uses
-- them; kek_version says which KEK version wrapped the row, so a KEK rotation re-wraps the rows
-- that still name an older one.
CREATE TABLE secret_keys (
    owner        text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    wrapped_key  bytea NOT NULL,
    kek_version  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz,
    PRIMARY KEY (owner, version)
);
CREATE INDEX secret_keys_kek_idx ON secret_keys (kek_version, owner, version);
