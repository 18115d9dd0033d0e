-- The catalog's statements (tables: agents, agent_versions, agent_reviews, catalog_terms).
-- Search has its own file, search.sql.
--
-- Listings are read with their arrays and timestamps rendered by PostgreSQL as JSON and ISO 8601
-- text: parsing arrays in Python costs more than the whole query on a catalog page, JSON and ISO
-- strings are parsed in C (json, pydantic). Templates (marked so) double the braces of their SQL.

-- name: listing
-- A listing by its id or its name (names are slugs, ids start with "agt_", so either identifies it).
-- Template: {column} is "id" or "name".
SELECT a.id, a.name, a.publisher_org_id, a.publisher_name, a.display_name, a.description, a.category,
       to_json(a.tags) AS tags, a.pricing_model, a.pricing, to_json(a.deployment_types) AS deployment_types,
       a.install_count, a.rating_avg, a.rating_count, a.status, a.status_reason, a.latest_version,
       to_json(a.created_at) #>> '{{}}' AS created_at, to_json(a.updated_at) #>> '{{}}' AS updated_at,
       to_json(a.published_at) #>> '{{}}' AS published_at
FROM agents a WHERE a.{column} = %s;

-- name: listing_for_update
-- The same, with the listing's row locked until the transaction ends (changes of one listing
-- queue behind each other). Template: {column} is "id" or "name".
SELECT a.id, a.name, a.publisher_org_id, a.publisher_name, a.display_name, a.description, a.category,
       to_json(a.tags) AS tags, a.pricing_model, a.pricing, to_json(a.deployment_types) AS deployment_types,
       a.install_count, a.rating_avg, a.rating_count, a.status, a.status_reason, a.latest_version,
       to_json(a.created_at) #>> '{{}}' AS created_at, to_json(a.updated_at) #>> '{{}}' AS updated_at,
       to_json(a.published_at) #>> '{{}}' AS published_at
FROM agents a WHERE a.{column} = %s FOR UPDATE;

-- name: insert_listing
-- A new listing, pending review; nothing (no row) when the name is taken, names being unique
-- across the marketplace (a concurrent submission of the same name waits for the first one).
INSERT INTO agents (id, name, publisher_org_id, publisher_name, display_name, description, category, tags,
                    pricing_model, pricing, deployment_types, status, created_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::text[], %s, %s::jsonb, %s::text[], 'pending_review', %s)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: insert_version
-- A new version, pending review.
INSERT INTO agent_versions (agent_id, version, status, manifest, permission_diff, submitted_by)
VALUES (%s, %s, 'pending_review', %s::jsonb, %s::jsonb, %s)
RETURNING agent_id, version, status, permission_diff, created_at, reviewed_at, review_reason;

-- name: add_terms
-- Words for typo correction. Sorted, so that concurrent submissions take the unique-index locks
-- in the same order.
INSERT INTO catalog_terms (term) SELECT unnest(%s::text[]) ORDER BY 1 ON CONFLICT DO NOTHING;

-- name: version_manifests
-- Every version of a listing with its status and manifest (a listing has few).
SELECT version, status, manifest FROM agent_versions WHERE agent_id = %s;

-- name: version_statuses
-- Every version of a listing with its status.
SELECT version, status FROM agent_versions WHERE agent_id = %s;

-- name: reopen_listing
-- A rejected listing goes back into review with a new version.
UPDATE agents SET status = 'pending_review', status_reason = NULL WHERE id = %s;

-- name: refresh_listing
-- Copy a version's display fields (and the publisher's current name) onto the listing.
UPDATE agents SET display_name = %s, description = %s, category = %s, tags = %s::text[], pricing_model = %s,
                  pricing = %s::jsonb, deployment_types = %s::text[], latest_version = %s, publisher_name = %s,
                  updated_at = now()
WHERE id = %s;

-- name: developer_listings
-- An org's own listings in every status with their pending versions, newest first (Keyset).
SELECT a.id, a.name, a.publisher_org_id, a.publisher_name, a.display_name, a.description, a.category,
       to_json(a.tags) AS tags, a.pricing_model, a.pricing, to_json(a.deployment_types) AS deployment_types,
       a.install_count, a.rating_avg, a.rating_count, a.status, a.status_reason, a.latest_version,
       to_json(a.created_at) #>> '{}' AS created_at, to_json(a.updated_at) #>> '{}' AS updated_at,
       to_json(a.published_at) #>> '{}' AS published_at,
       ARRAY(SELECT v.version FROM agent_versions v WHERE v.agent_id = a.id AND v.status = 'pending_review'
             ORDER BY v.created_at) AS pending_versions
FROM agents a
WHERE a.publisher_org_id = %s
  AND (%s::timestamptz IS NULL OR (a.created_at, a.id) < (%s::timestamptz, %s::text))
ORDER BY a.created_at DESC, a.id DESC
LIMIT %s;

-- name: approve_version
-- A pending version approved by a reviewer, with the reviewer's note.
UPDATE agent_versions SET status = 'approved', reviewed_by = %s, reviewed_at = now(), review_reason = %s
WHERE agent_id = %s AND version = %s;

-- name: reject_version
-- A pending version rejected by a reviewer, with the reason.
UPDATE agent_versions SET status = 'rejected', reviewed_by = %s, reviewed_at = now(), review_reason = %s
WHERE agent_id = %s AND version = %s;

-- name: publish_listing
-- The listing approved (or reinstated); "newest" in the catalog means first published.
UPDATE agents SET status = 'approved', status_reason = NULL, published_at = coalesce(published_at, now())
WHERE id = %s;

-- name: pending_version_count
-- How many versions of a listing wait for review.
SELECT count(*) FROM agent_versions WHERE agent_id = %s AND status = 'pending_review';

-- name: reject_listing
-- A never-approved listing rejected with its last pending version.
UPDATE agents SET status = 'rejected', status_reason = %s WHERE id = %s;

-- name: suspend_listing
-- The listing hidden from the catalog; no new installs.
UPDATE agents SET status = 'suspended', status_reason = %s, updated_at = now() WHERE id = %s;

-- name: approved_version_manifest
-- The manifest of an approved version, if it is one.
SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s AND status = 'approved';

-- name: version_manifest
-- The manifest of a version whatever its status (a deployment or a run names one it was given).
SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s;

-- name: agent_id_by_id
-- The listing's id, if a listing has this id.
SELECT id FROM agents WHERE id = %s;

-- name: agent_id_by_name
-- The listing's id, if a listing has this name.
SELECT id FROM agents WHERE name = %s;

-- name: adjust_install_count
-- Count an install (+1) or an uninstall (-1).
UPDATE agents SET install_count = greatest(install_count + %s, 0) WHERE id = %s;

-- name: versions_with_manifests
-- Every version of a listing as the API shows it, with its manifest.
SELECT agent_id, version, status, permission_diff, created_at, reviewed_at, review_reason, manifest
FROM agent_versions WHERE agent_id = %s;

-- name: version_detail
-- One version of a listing as the API shows it, with its manifest.
SELECT agent_id, version, status, permission_diff, created_at, reviewed_at, review_reason, manifest,
       package_sha256, package_size, package_kind
FROM agent_versions WHERE agent_id = %s AND version = %s;

-- name: rating_distribution
-- Reviews of a listing per star.
SELECT rating, count(*) AS n FROM agent_reviews WHERE agent_id = %s GROUP BY rating;

-- name: upsert_review
-- Create or replace an org's review of an agent; "created" tells which.
INSERT INTO agent_reviews (agent_id, org_id, id, rating, text, author)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (agent_id, org_id) DO UPDATE
    SET rating = EXCLUDED.rating, text = EXCLUDED.text, author = EXCLUDED.author, updated_at = now()
RETURNING id, agent_id, org_id, rating, text, created_at, updated_at, (xmax = 0) AS created;

-- name: refresh_rating
-- Recompute a listing's rating from its reviews.
UPDATE agents SET (rating_avg, rating_count) = (
    SELECT coalesce(round(avg(rating), 2), 0), count(*) FROM agent_reviews WHERE agent_id = %s)
WHERE id = %s;

-- name: reviews
-- Reviews of a listing, newest first (Keyset).
SELECT r.id, r.agent_id, r.org_id, r.rating, r.text, r.created_at, r.updated_at
FROM agent_reviews r
WHERE r.agent_id = %s
  AND (%s::timestamptz IS NULL OR (r.created_at, r.id) < (%s::timestamptz, %s::text))
ORDER BY r.created_at DESC, r.id DESC
LIMIT %s;

-- name: seed_lock
-- One process publishes the built-in agents at a time (until the transaction ends).
SELECT pg_advisory_xact_lock(%s);

-- used by billing
-- name: publisher_org_of
-- The org that publishes a listing (a listing's publisher never changes).
SELECT publisher_org_id FROM agents WHERE id = %s;

-- Agent packages (issue 14).

-- name: version_package_for_update
-- A version's status, manifest and package, its row locked: a package is set once, by one upload.
SELECT status, manifest, package_sha256, package_size, package_kind
FROM agent_versions WHERE agent_id = %s AND version = %s FOR UPDATE;

-- name: version_package_state
-- The same without the lock (the upload's checks before it stores any bytes).
SELECT status, manifest, package_sha256, package_size, package_kind
FROM agent_versions WHERE agent_id = %s AND version = %s;

-- name: set_version_package
-- Record a version's package; only while it has none (a package never changes).
UPDATE agent_versions SET package_sha256 = %s, package_size = %s, package_kind = %s
WHERE agent_id = %s AND version = %s AND package_sha256 IS NULL;

-- name: version_package
-- A version's package columns (all NULL without one).
SELECT package_sha256, package_size, package_kind FROM agent_versions WHERE agent_id = %s AND version = %s;

-- name: approved_versions_with_package
-- The approved versions whose package has this digest (a data plane's fetch checks its org has one).
SELECT agent_id, version FROM agent_versions WHERE package_sha256 = %s AND status = 'approved';
