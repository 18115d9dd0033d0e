-- The agent registry: listings, immutable versions, reviews, the catalog search index, and the
-- deployments table that the install flow extends (ALTER TABLE) in its own migration.

-- array_to_string is only STABLE (it calls element output functions); for text[] the result
-- cannot change, and a generated column needs an IMMUTABLE expression.
CREATE FUNCTION catalog_words(words text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(words, ' ');

CREATE TABLE agents (
    id                  text PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    publisher_org_id    text NOT NULL REFERENCES orgs (id),
    -- The publisher org's name when the listing was written: searchable and shown in the catalog.
    publisher_name      text NOT NULL,
    display_name        text NOT NULL,
    description         text NOT NULL,
    category            text NOT NULL,
    tags                text[] NOT NULL DEFAULT '{}',
    pricing_model       text NOT NULL CHECK (pricing_model IN ('free', 'usage', 'subscription', 'hybrid')),
    pricing             jsonb NOT NULL,
    deployment_types    text[] NOT NULL,
    status              text NOT NULL
                        CHECK (status IN ('pending_review', 'approved', 'rejected', 'suspended')),
    status_reason       text,
    -- The highest approved version (the one the catalog shows and installs default to).
    latest_version      text,
    install_count       bigint NOT NULL DEFAULT 0 CHECK (install_count >= 0),
    rating_avg          numeric(3, 2) NOT NULL DEFAULT 0,
    rating_count        integer NOT NULL DEFAULT 0,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- First approval: "newest" in the catalog means newest published.
    published_at        timestamptz,
    search_doc          tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, display_name || ' ' || replace(name, '-', ' ')), 'A') ||
        setweight(to_tsvector('english'::regconfig, catalog_words(tags) || ' ' || category), 'B') ||
        setweight(to_tsvector('english'::regconfig, description), 'C') ||
        setweight(to_tsvector('english'::regconfig, publisher_name), 'D')
    ) STORED,
    CHECK (status <> 'approved' OR (latest_version IS NOT NULL AND published_at IS NOT NULL))
);

-- The public catalog only ever reads approved listings, so its indexes are partial.
-- fastupdate off: new entries go straight into the index instead of a pending list that every
-- search would scan (and that makes the planner fall back to a sequential scan); catalog writes
-- are rare, searches are not.
CREATE INDEX agents_search_idx ON agents USING gin (search_doc) WITH (fastupdate = off)
    WHERE status = 'approved';
CREATE INDEX agents_rating_idx ON agents (rating_avg DESC, id DESC) WHERE status = 'approved';
CREATE INDEX agents_installs_idx ON agents (install_count DESC, id DESC) WHERE status = 'approved';
CREATE INDEX agents_newest_idx ON agents (published_at DESC, id DESC) WHERE status = 'approved';
CREATE INDEX agents_publisher_idx ON agents (publisher_org_id, created_at DESC, id DESC);

CREATE TABLE agent_versions (
    agent_id            text NOT NULL REFERENCES agents (id),
    version             text NOT NULL,
    status              text NOT NULL CHECK (status IN ('pending_review', 'approved', 'rejected')),
    -- The normalized manifest (defaults filled in), exactly as validated.
    manifest            jsonb NOT NULL,
    -- Permissions compared with the version below it: {previous_version, added, removed, unchanged}.
    permission_diff     jsonb NOT NULL,
    submitted_by        text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    reviewed_by         text,
    reviewed_at         timestamptz,
    review_reason       text,
    PRIMARY KEY (agent_id, version)
);

-- Words of every listing, for typo tolerance: a query word missing from here is widened to its
-- nearest trigram neighbours (the "did you mean" technique of the pg_trgm documentation). GiST,
-- not GIN: only GiST serves `ORDER BY term <-> word LIMIT k` (nearest neighbours) from the index.
CREATE TABLE catalog_terms (
    term    text PRIMARY KEY
);
CREATE INDEX catalog_terms_trgm_idx ON catalog_terms USING gist (term gist_trgm_ops);

CREATE TABLE agent_reviews (
    agent_id    text NOT NULL REFERENCES agents (id),
    org_id      text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    id          text NOT NULL UNIQUE,
    rating      smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text        text NOT NULL DEFAULT '',
    author      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, org_id)
);
CREATE INDEX agent_reviews_page_idx ON agent_reviews (agent_id, created_at DESC, id DESC);

-- An org's installed agents. The install flow owns its life cycle and adds its own columns;
-- the registry reads it to allow reviews only from orgs that installed the agent.
CREATE TABLE deployments (
    id                   text PRIMARY KEY,
    org_id               text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    agent_id             text NOT NULL REFERENCES agents (id),
    version              text NOT NULL,
    deployment_type      text NOT NULL CHECK (deployment_type IN ('saas', 'byoc')),
    status               text NOT NULL,
    config               jsonb NOT NULL DEFAULT '{}',
    granted_permissions  jsonb NOT NULL DEFAULT '[]',
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_org_agent_idx ON deployments (org_id, agent_id);
CREATE INDEX deployments_agent_idx ON deployments (agent_id);
