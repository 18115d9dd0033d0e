-- Agent packages (issue 14): a version may carry its code as an archive, stored content-addressed
-- in the artifact store (files under the data directory, or a Cloud Storage bucket). The version
-- records which bytes: their SHA-256, size and kind. Set once (immutable), NULL when the version
-- has no package (built-in agents, or an agent that names a container image).
ALTER TABLE agent_versions
    ADD COLUMN package_sha256 text CHECK (package_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN package_size   bigint CHECK (package_size > 0),
    ADD COLUMN package_kind   text CHECK (package_kind IN ('tar.gz', 'zip')),
    ADD CONSTRAINT agent_versions_package_whole
        CHECK ((package_sha256 IS NULL) = (package_size IS NULL) AND (package_sha256 IS NULL) = (package_kind IS NULL));

-- The data plane fetches a package by its digest: find the versions that carry it.
CREATE INDEX agent_versions_package_idx ON agent_versions (package_sha256) WHERE package_sha256 IS NOT NULL;
