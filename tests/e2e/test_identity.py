"""Tokens, refresh rotation with reuse detection, API keys — through the gateway."""

from __future__ import annotations

import time

import jwt

from shared.identity.service import secret_hash


def test_dev_grant_issues_tokens_and_me_describes_the_user(anon):
    resp = anon.post("/auth/token", json={"grant_type": "dev", "email": "Dev.Person@Example.com"})
    assert resp.status == 200, resp
    assert resp.body["token_type"] == "Bearer" and resp.body["expires_in"] > 0
    me = anon.get("/me", token=resp.body["access_token"])
    assert me.status == 200
    assert me.body["kind"] == "user" and me.body["user"]["email"].lower() == "dev.person@example.com"
    # The same email (any case) is the same user.
    again = anon.post("/auth/token", json={"grant_type": "dev", "email": "dev.person@example.com"})
    assert anon.get("/me", token=again.body["access_token"]).body["user"]["id"] == me.body["user"]["id"]


def test_refresh_rotates_and_reuse_revokes_the_family(anon):
    first = anon.post("/auth/token", json={"grant_type": "dev", "email": "rotate@example.com"}).body
    second = anon.post("/auth/token", json={"grant_type": "refresh_token",
                                            "refresh_token": first["refresh_token"]})
    assert second.status == 200, second
    assert second.body["refresh_token"] != first["refresh_token"]
    assert anon.get("/me", token=second.body["access_token"]).status == 200
    third = anon.post("/auth/token", json={"grant_type": "refresh_token",
                                           "refresh_token": second.body["refresh_token"]})
    assert third.status == 200
    # Presenting the already-rotated first token again is reuse: refused, and the family dies.
    reuse = anon.post("/auth/token", json={"grant_type": "refresh_token",
                                           "refresh_token": first["refresh_token"]})
    assert reuse.status == 401 and reuse.body["error"]["code"] == "refresh_token_reused"
    latest = anon.post("/auth/token", json={"grant_type": "refresh_token",
                                            "refresh_token": third.body["refresh_token"]})
    assert latest.status == 401 and latest.body["error"]["code"] == "invalid_grant"


def test_bad_refresh_tokens_are_refused(anon):
    for token in ["nope", "rt.x.y", "rt.rtk_doesnotexist.secretsecretsecret", "rt..", "a.b.c.d"]:
        resp = anon.post("/auth/token", json={"grant_type": "refresh_token", "refresh_token": token})
        assert resp.status == 401, (token, resp)
        assert resp.body["error"]["code"] == "invalid_grant"


def test_access_token_checks(anon, container, make_user):
    user = make_user()
    assert anon.get("/me").status == 401
    assert anon.get("/me", headers={"Authorization": "Basic abc"}).status == 401
    tampered = user.token[:-4] + ("AAAA" if not user.token.endswith("AAAA") else "BBBB")
    assert anon.get("/me", token=tampered).status == 401
    claims = jwt.decode(user.token, options={"verify_signature": False})
    header = jwt.get_unverified_header(user.token)
    issuer = container.issuer
    key = issuer._private[1]  # the local issuer's own key, to forge otherwise-valid tokens
    for bad in ({"aud": "someone-else"}, {"iss": "evil"}, {"exp": int(time.time()) - 10}):
        forged = jwt.encode({**claims, **bad}, key, algorithm="ES256", headers={"kid": header["kid"]})
        resp = anon.get("/me", token=forged)
        assert resp.status == 401, bad
    unknown_kid = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "kid_unknown"})
    assert anon.get("/me", token=unknown_kid).status == 401


def test_api_keys_are_shown_once_stored_hashed_usable_and_revocable(make_org, container):
    admin, org_id = make_org()
    created = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "operator"})
    assert created.status == 201, created
    secret = created.body["key"]
    key_id = created.body["id"]
    listed = admin.get(f"/orgs/{org_id}/api-keys").body["items"]
    assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]
    with container.db.transaction() as tx:
        stored = tx.fetch_one("SELECT * FROM api_keys WHERE id = %s", key_id)
    assert secret not in str(stored) and stored["secret_hash"] == secret_hash(secret.split(".")[2])
    me = admin.get("/me", token=secret)
    assert me.status == 200 and me.body == {**me.body, "kind": "api_key", "org_id": org_id, "role": "operator"}
    assert admin.get(f"/orgs/{org_id}", token=secret).body["role"] == "operator"
    # An operator key cannot do admin things.
    assert admin.post(f"/orgs/{org_id}/api-keys", json={"name": "x"}, token=secret).status == 403
    assert admin.delete(f"/orgs/{org_id}/api-keys/{key_id}").status == 200
    assert admin.get("/me", token=secret).status == 401
    assert admin.delete(f"/orgs/{org_id}/api-keys/{key_id}").status == 404
    wrong_secret = secret[:-3] + "abc"
    assert admin.get("/me", token=wrong_secret).status == 401


def test_api_keys_cannot_be_dataplane_or_create_orgs(make_org):
    admin, org_id = make_org()
    resp = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "dp", "role": "dataplane"})
    assert resp.status == 422
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "adm", "role": "admin"}).body["key"]
    assert admin.post("/orgs", json={"name": "via key"}, token=key).status == 422
