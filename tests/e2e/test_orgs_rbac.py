"""Orgs and the role matrix: each role x each org operation; non-members get 404 everywhere."""

from __future__ import annotations

import pytest

from functions.main import load_operations
from functions.operation import REGISTRY
from shared.identity.models import Role
from shared.identity.ports import TokenClaims
from shared.identity.service import IdentityService
from shared.kernel.errors import Unauthorized

ROLES = ["admin", "developer", "operator", "approver", "viewer"]
ALL = set(ROLES)
ADMIN_ONLY = {"admin"}

# (name, method, path template, body, roles allowed) — the contract, written out by hand.
ORG_OPERATIONS = [
    ("get org", "GET", "/orgs/{org}", None, ALL),
    ("list members", "GET", "/orgs/{org}/members", None, ALL),
    ("add member", "POST", "/orgs/{org}/members", {"email": "new-{n}@example.com", "role": "viewer"}, ADMIN_ONLY),
    ("change role", "PATCH", "/orgs/{org}/members/{target}", {"role": "operator"}, ADMIN_ONLY),
    ("remove member", "DELETE", "/orgs/{org}/members/{target}", None, ADMIN_ONLY),
    ("create key", "POST", "/orgs/{org}/api-keys", {"name": "k", "role": "viewer"}, ADMIN_ONLY),
    ("list keys", "GET", "/orgs/{org}/api-keys", None, ADMIN_ONLY),
    ("revoke key", "DELETE", "/orgs/{org}/api-keys/{key}", None, ADMIN_ONLY),
    ("get preferences", "GET", "/orgs/{org}/preferences", None, ALL),
    ("put preferences", "PUT", "/orgs/{org}/preferences", {"data": {"currency": "EUR"}}, ADMIN_ONLY),
    ("list audit", "GET", "/orgs/{org}/audit", None, ADMIN_ONLY),
    ("verify audit", "GET", "/orgs/{org}/audit/verify", None, ADMIN_ONLY),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "method", "path", "body", "allowed"), ORG_OPERATIONS,
                         ids=[o[0] for o in ORG_OPERATIONS])
def test_role_matrix(make_org, member, role, name, method, path, body, allowed):
    admin, org_id = make_org()
    caller = admin if role == "admin" else member(admin, org_id, role)
    target = member(admin, org_id, "viewer")
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "t", "role": "viewer"}).body["id"]
    url = path.format(org=org_id, target=target.user_id, key=key)
    if body and "email" in body:
        body = {**body, "email": body["email"].format(n=role + name.replace(" ", ""))}
    resp = caller.request(method, url, json=body)
    if role in allowed:
        assert resp.status in (200, 201, 204), (role, name, resp)
    else:
        assert resp.status == 403, (role, name, resp)
        assert resp.body["error"]["code"] == "forbidden"


def test_matrix_covers_every_registered_org_operation():
    load_operations()
    registered = {(op.method, op.path) for op in REGISTRY if op.path.startswith("/orgs/{org_id}")}
    covered = {(m, p.replace("{org}", "{org_id}").replace("{target}", "{user_id}").replace("{key}", "{key_id}"))
               for _, m, p, _, _ in ORG_OPERATIONS}
    foundation = {r for r in registered if r[1].split("/")[3:4] in (["members"], ["api-keys"], ["preferences"],
                                                                     ["audit"], [])}
    assert foundation <= covered, foundation - covered


def _org_scoped_operations():
    load_operations()
    return [op for op in REGISTRY if "{org_id}" in op.path and op.auth]


def test_non_members_get_404_on_every_org_scoped_path(make_org, make_user):
    _, org_id = make_org()
    outsider_admin, other_org = make_org("Other")
    outsider_key = outsider_admin.post(f"/orgs/{other_org}/api-keys",
                                       json={"name": "k", "role": "admin"}).body["key"]
    stranger = make_user("stranger")
    ops = _org_scoped_operations()
    assert len(ops) >= 12
    for op in ops:
        url = op.path
        for param in op.path_params:
            url = url.replace("{" + param + "}", org_id if param == "org_id" else "x_does_not_matter")
        for who, token in (("user of another org", outsider_admin.token), ("stranger", stranger.token),
                           ("key of another org", outsider_key)):
            resp = stranger.request(op.method, url, json={}, token=token)
            assert resp.status == 404, (op.name, who, resp)
            assert resp.body["error"]["code"] == "not_found"
            assert org_id not in str(resp.body)
    # An org that does not exist looks exactly the same.
    missing = stranger.get("/orgs/org_doesnotexist")
    assert missing.status == 404 and missing.body == stranger.get(f"/orgs/{org_id}").body


def test_org_lifecycle_and_me(make_user):
    alice = make_user("alice")
    created = alice.post("/orgs", json={"name": "Alice Corp"})
    assert created.status == 201 and created.body["role"] == "admin"
    org_id = created.body["id"]
    me = alice.get("/me").body
    assert {"org_id": org_id, "org_name": "Alice Corp", "role": "admin"} in me["memberships"]
    got = alice.get(f"/orgs/{org_id}")
    assert got.status == 200 and got.body["name"] == "Alice Corp"


def test_role_read_at_authentication_is_the_current_one(make_org, member):
    """The role is read with the user on every request: a change is seen by the very next one,
    in the org-scoped check and in GET /me alike, and another org's membership never leaks in."""
    admin, org_id = make_org()
    other = admin.post("/orgs", json={"name": "Second"}).body["id"]
    bob = member(admin, org_id, "viewer")
    assert bob.put(f"/orgs/{org_id}/preferences", json={"data": {}}).status == 403
    assert bob.get(f"/orgs/{other}").status == 404
    admin.patch(f"/orgs/{org_id}/members/{bob.user_id}", json={"role": "admin"})
    assert bob.put(f"/orgs/{org_id}/preferences", json={"data": {}}).status == 200
    assert bob.get("/me").body["memberships"] == [{"org_id": org_id, "org_name": "Acme", "role": "admin"}]
    assert [m["org_id"] for m in admin.get("/me").body["memberships"]] == [org_id, other]
    admin.delete(f"/orgs/{org_id}/members/{bob.user_id}")
    assert bob.get(f"/orgs/{org_id}").status == 404
    assert bob.get("/me").body["memberships"] == []


def test_members_add_change_remove_and_last_admin_guard(make_org, make_user, member):
    admin, org_id = make_org()
    bob = member(admin, org_id, "developer")
    assert bob.get(f"/orgs/{org_id}").body["role"] == "developer"
    dup = admin.post(f"/orgs/{org_id}/members", json={"email": bob.email, "role": "viewer"})
    assert dup.status == 409
    assert admin.patch(f"/orgs/{org_id}/members/{bob.user_id}", json={"role": "admin"}).body["role"] == "admin"
    admin_id = admin.get("/me").body["user"]["id"]
    # Two admins: one may step down; the last may not.
    assert admin.patch(f"/orgs/{org_id}/members/{admin_id}", json={"role": "viewer"}).status == 200
    last = bob.patch(f"/orgs/{org_id}/members/{bob.user_id}", json={"role": "viewer"})
    assert last.status == 409 and last.body["error"]["code"] == "last_admin"
    assert bob.delete(f"/orgs/{org_id}/members/{bob.user_id}").status == 409
    assert bob.delete(f"/orgs/{org_id}/members/{admin_id}").status == 204
    assert admin.get(f"/orgs/{org_id}").status == 404
    assert bob.delete(f"/orgs/{org_id}/members/usr_nobody").status == 404


def test_preferences_round_trip(make_org, member):
    admin, org_id = make_org()
    assert admin.get(f"/orgs/{org_id}/preferences").body["data"] == {}
    put = admin.put(f"/orgs/{org_id}/preferences", json={"data": {"currency": "EUR", "approvers": ["a"]}})
    assert put.status == 200
    viewer = member(admin, org_id, "viewer")
    assert viewer.get(f"/orgs/{org_id}/preferences").body["data"] == {"currency": "EUR", "approvers": ["a"]}
    huge = admin.put(f"/orgs/{org_id}/preferences", json={"data": {"blob": "x" * 70_000}})
    assert huge.status == 422
    assert viewer.get(f"/orgs/{org_id}/preferences").body["data"] == {"currency": "EUR", "approvers": ["a"]}


class _ProviderTokens:
    """An identity provider's verified tokens (gcp mode): the token text is the email it carries."""

    def verify(self, token: str) -> TokenClaims:
        return TokenClaims(subject=f"idp|{token}", email=token or None, issuer="https://idp.example",
                           expires_at=4_000_000_000, email_verified=True)


def test_a_provider_user_is_found_by_email_with_roles_in_one_statement(container, make_org, member):
    """gcp mode: users are matched by email (any case), created on first sight, with their roles."""
    admin, org_id = make_org()
    bob = member(admin, org_id, "operator")
    provider = IdentityService(container.db, container.users, container.audit, _ProviderTokens(), None,
                               access_ttl=900, refresh_ttl=3600)
    known = provider.authenticate(bob.email.upper(), org_id=org_id, memberships=True)
    assert known.subject == bob.user_id and known.org_role == (org_id, Role.OPERATOR)
    assert [(m.org_id, m.role) for m in known.memberships or ()] == [(org_id, Role.OPERATOR)]
    assert provider.authenticate(bob.email, org_id="org_other").org_role == ("org_other", None)
    fresh = provider.authenticate("first-sight@example.com", org_id=org_id)
    assert fresh.subject.startswith("usr_") and fresh.org_role == (org_id, None)
    assert provider.authenticate("FIRST-SIGHT@example.com").subject == fresh.subject
    with pytest.raises(Unauthorized):
        provider.authenticate("")
