"""Bad input gets SPEC's error body with a 4xx and changes nothing."""

from __future__ import annotations

import json

import pytest


def _counts(container):
    with container.db.transaction() as tx:
        return {t: tx.fetch_val(f"SELECT count(*) FROM {t}")
                for t in ("users", "orgs", "memberships", "api_keys", "audit_log", "org_preferences")}


def _is_error_body(body, status):
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    return status


BAD_REQUESTS = [
    ("malformed json", "POST", "/orgs", {"data": b'{"name": "x"', "content_type": "application/json"}, 400),
    ("json NaN", "POST", "/orgs", {"data": b'{"name": NaN}', "content_type": "application/json"}, 400),
    ("not utf-8", "POST", "/orgs", {"data": b'{"name": "\xff"}', "content_type": "application/json"}, 400),
    ("array body", "POST", "/orgs", {"json": ["x"]}, 422),
    ("wrong type", "POST", "/orgs", {"json": {"name": 5}}, 422),
    ("missing field", "POST", "/orgs", {"json": {}}, 422),
    ("unknown field", "POST", "/orgs", {"json": {"name": "x", "admin": True}}, 422),
    ("empty name", "POST", "/orgs", {"json": {"name": ""}}, 422),
    ("too long name", "POST", "/orgs", {"json": {"name": "x" * 500}}, 422),
    ("form body", "POST", "/orgs", {"data": b"name=x", "content_type": "application/x-www-form-urlencoded"}, 415),
    ("oversized body", "POST", "/orgs", {"data": b'{"name": "' + b"x" * 2_000_000 + b'"}',
                                         "content_type": "application/json"}, 413),
    ("unknown route", "GET", "/no/such/thing", {}, 404),
    ("wrong method", "DELETE", "/orgs", {}, 405),
    ("bad grant", "POST", "/auth/token", {"json": {"grant_type": "password", "email": "a@b.c"}}, 422),
    ("bad email", "POST", "/auth/token", {"json": {"grant_type": "dev", "email": "not-an-email"}}, 422),
    ("NUL in a string", "POST", "/orgs", {"json": {"name": "a\u0000b"}}, 422),
    ("NUL in the query", "GET", "/agents?q=a%00b", {}, 422),
    ("lone surrogate", "POST", "/orgs", {"data": b'{"name": "a\\ud800b"}', "content_type": "application/json"}, 422),
    ("lone low surrogate", "POST", "/orgs", {"data": b'{"name": "\\uDC00"}', "content_type": "application/json"}, 422),
    ("NUL in the path", "GET", "/orgs/org%00x", {}, 422),
]


def test_nul_is_refused_with_where_it_was(make_org):
    admin, org_id = make_org()
    resp = admin.put(f"/orgs/{org_id}/preferences", json={"data": {"a": [{"b": "x\u0000"}]}})
    assert resp.status == 422 and resp.body["error"]["details"][0]["path"] == "data.a[0].b"
    resp = admin.put(f"/orgs/{org_id}/preferences", json={"data": {"k\u0000": 1}})
    assert resp.status == 422 and resp.body["error"]["details"][0]["path"] == "data.k\\u0000"
    resp = admin.get(f"/orgs/{org_id}/audit?action=x%00")
    assert resp.status == 422 and resp.body["error"]["details"][0]["path"] == "query.action"
    assert admin.get(f"/orgs/{org_id}/preferences").body.get("data", {}) == {}
    assert admin.post("/orgs", json={"name": "plain \\u0000 text is fine"}).status == 201
    paired = admin.post("/orgs", data=b'{"name": "smile \\ud83d\\ude00"}', content_type="application/json")
    assert paired.status == 201 and paired.body["name"] == "smile \U0001f600"  # a pair is one character


@pytest.mark.parametrize(("name", "method", "path", "kw", "status"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_change_nothing(container, make_user, name, method, path, kw, status):
    user = make_user()
    before = _counts(container)
    resp = user.request(method, path, **kw)
    assert resp.status == status, (name, resp)
    _is_error_body(resp.body, status)
    assert _counts(container) == before


def test_field_paths_in_validation_errors(make_org):
    admin, org_id = make_org()
    resp = admin.post(f"/orgs/{org_id}/members", json={"email": "x@example.com", "role": "owner"})
    assert resp.status == 422
    assert [d["path"] for d in resp.body["error"]["details"]] == ["role"]
    resp = admin.put(f"/orgs/{org_id}/preferences", json={"data": [1]})
    assert resp.body["error"]["details"][0]["path"] == "data"


def test_unknown_org_and_bad_query(container, make_org):
    admin, org_id = make_org()
    before = _counts(container)
    for method, path in (("GET", "/orgs/org_nope"), ("POST", "/orgs/org_nope/members"),
                         ("PUT", "/orgs/org_nope/preferences")):
        resp = admin.request(method, path, json={"email": "a@example.com", "role": "viewer"})
        assert resp.status == 404 and _is_error_body(resp.body, 404)
    assert admin.get(f"/orgs/{org_id}/audit?limit=0").status == 422
    assert admin.get(f"/orgs/{org_id}/audit?limit=abc").status == 422
    assert admin.get(f"/orgs/{org_id}/audit?bogus=1").status == 422
    bad_cursor = admin.get(f"/orgs/{org_id}/audit?cursor=!!!")
    assert bad_cursor.status == 400 and bad_cursor.body["error"]["code"] == "invalid_cursor"
    assert _counts(container) == before


def test_idempotency_key_replays_the_first_response(container, make_user):
    user = make_user()
    headers = {"Idempotency-Key": "create-org-1"}
    first = user.post("/orgs", json={"name": "Once"}, headers=headers)
    before = _counts(container)
    second = user.post("/orgs", json={"name": "Once"}, headers=headers)
    assert second.status == first.status == 201
    assert second.body == first.body and second.headers["Idempotent-Replayed"] == "true"
    assert _counts(container) == before
    assert len([m for m in user.get("/me").body["memberships"] if m["org_name"] == "Once"]) == 1
    # The same key with another body is refused; another user's same key is independent.
    other = user.post("/orgs", json={"name": "Different"}, headers=headers)
    assert other.status == 422 and other.body["error"]["code"] == "idempotency_key_reused"
    assert make_user().post("/orgs", json={"name": "Once"}, headers=headers).body["id"] != first.body["id"]
    assert _counts(container)["orgs"] == before["orgs"] + 1


def test_an_api_key_create_replays_the_same_key_sealed_at_rest(container, make_org, anon):
    admin, org_id = make_org()
    headers = {"Idempotency-Key": f"key-{org_id}"}
    first = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "viewer"}, headers=headers)
    second = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "viewer"}, headers=headers)
    assert first.status == second.status == 201 and second.body == first.body
    assert len(admin.get(f"/orgs/{org_id}/api-keys").body["items"]) == 1
    key = first.body["key"]
    assert anon.get("/me", token=key).status == 200
    with container.db.read() as tx:
        rows = tx.fetch_all("SELECT scope, response_sealed FROM idempotency_keys WHERE key = %s", headers["Idempotency-Key"])
    assert len(rows) == 1 and key.split(".")[2].encode() not in bytes(rows[0]["response_sealed"])
    # A sealed response copied under another caller's claim does not open there: it is forgotten
    # and the request runs as a new one, never replaying the first caller's secret.
    other, other_org = make_org()
    claim = {"Idempotency-Key": "steal"}
    assert other.post(f"/orgs/{other_org}/api-keys", json={"name": "x", "role": "viewer"}, headers=claim).status == 201
    with container.db.transaction() as tx:
        tx.execute("UPDATE idempotency_keys SET response_sealed = %s WHERE key = 'steal'",
                   bytes(rows[0]["response_sealed"]))
    stolen = other.post(f"/orgs/{other_org}/api-keys", json={"name": "x", "role": "viewer"}, headers=claim)
    assert stolen.status == 201 and key not in json.dumps(stolen.body), stolen
    assert stolen.headers.get("Idempotent-Replayed") is None


def test_idempotent_replay_of_an_error(container, make_org):
    admin, org_id = make_org()
    headers = {"Idempotency-Key": "dup-member"}
    body = {"email": "dup-idem@example.com", "role": "viewer"}
    assert admin.post(f"/orgs/{org_id}/members", json=body, headers=headers).status == 201
    again = admin.post(f"/orgs/{org_id}/members", json=body, headers=headers)
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert admin.post(f"/orgs/{org_id}/members", json=body).status == 409
    bad_key = admin.post(f"/orgs/{org_id}/members", json=body, headers={"Idempotency-Key": "bad key é"})
    assert bad_key.status == 400


def test_error_body_is_json_everywhere(anon):
    resp = anon.get("/me")
    assert resp.status == 401 and resp.headers["Content-Type"] == "application/json"
    assert json.loads(json.dumps(resp.body))["error"]["code"] == "unauthorized"
    assert resp.headers["X-Request-Id"]


@pytest.mark.parametrize("role", ["dataplane", "owner", "Admin", "", 5, None])
def test_a_role_in_a_request_is_one_of_the_five_org_roles(make_org, make_user, member, container, role):
    """Every input that takes a role (adding a member, changing one, creating an API key) refuses
    anything else, ``dataplane`` included, with a 422 naming the field, and changes nothing."""
    admin, org_id = make_org()
    newcomer = make_user("newcomer")
    viewer = member(admin, org_id, "viewer")
    before = _counts(container)
    for method, path, body in [
        ("POST", f"/orgs/{org_id}/members", {"email": newcomer.email, "role": role}),
        ("PATCH", f"/orgs/{org_id}/members/{viewer.user_id}", {"role": role}),
        ("POST", f"/orgs/{org_id}/api-keys", {"name": "k", "role": role}),
    ]:
        resp = admin.request(method, path, json=body)
        assert resp.status == 422, (method, path, resp)
        assert _is_error_body(resp.body, resp.status)
        assert [d["path"] for d in resp.body["error"]["details"]] == ["role"], resp.body
        assert "admin, developer, operator, approver, viewer" in resp.body["error"]["details"][0]["message"]
    assert _counts(container) == before
    roles = {m["user_id"]: m["role"] for m in admin.get(f"/orgs/{org_id}/members").body["items"]}
    assert roles[viewer.user_id] == "viewer" and len(roles) == 2


def test_a_package_upload_takes_an_archive_and_nothing_else(make_org, container):
    """issue 14: the package body is bytes of an archive type; JSON, forms and empty bodies are
    refused with the error body and leave the version without a package."""
    from registry_support import make_manifest, submit

    admin, org_id = make_org()
    listing = submit(admin, org_id, make_manifest())["listing"]
    url = f"/agents/{listing['id']}/versions/1.0.0/package"
    for kw, status in (({"json": {"package": "x"}}, 415), ({"data": b"a=b", "content_type": "text/plain"}, 415),
                       ({"data": b"", "content_type": "application/gzip"}, 422),
                       ({"data": b"\x00" * 10, "content_type": "application/zip"}, 422)):
        resp = admin.put(url, **kw)
        assert _is_error_body(resp.body, resp.status) == status, (kw, resp)
    assert admin.get(f"/agents/{listing['id']}/versions/1.0.0").body["package"] is None
