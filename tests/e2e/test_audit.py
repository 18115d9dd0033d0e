"""The hash-chained audit log: an entry per mutation, and verify catches tampering."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.audit.service import around_seq, canonical_json
from shared.kernel.db.database import QueryError


def _actions(admin, org_id):
    items, cursor = [], None
    while True:
        url = f"/orgs/{org_id}/audit?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = admin.get(url).body
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return [e["action"] for e in reversed(items)], list(reversed(items))


def test_every_mutation_writes_one_entry(make_org, member):
    admin, org_id = make_org()
    bob = member(admin, org_id, "viewer")
    admin.patch(f"/orgs/{org_id}/members/{bob.user_id}", json={"role": "operator"})
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "k"}).body
    admin.delete(f"/orgs/{org_id}/api-keys/{key['id']}")
    admin.put(f"/orgs/{org_id}/preferences", json={"data": {"tz": "UTC"}})
    admin.delete(f"/orgs/{org_id}/members/{bob.user_id}")
    # Refused mutations write nothing.
    admin.patch(f"/orgs/{org_id}/members/{bob.user_id}", json={"role": "admin"})
    actions, entries = _actions(admin, org_id)
    assert actions == ["org.created", "member.added", "member.added", "member.role_changed", "api_key.created",
                       "api_key.revoked", "preferences.updated", "member.removed"]
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert all(e["actor"].startswith("user:usr_") for e in entries)
    assert key["key"] not in canonical_json(entries)
    filtered = admin.get(f"/orgs/{org_id}/audit?action=member.added").body["items"]
    assert len(filtered) == 2
    assert admin.get(f"/orgs/{org_id}/audit/verify").body == {
        "ok": True, "checked": 8, "head_seq": 8, "first_broken_seq": None, "problem": None}


def test_the_database_refuses_update_and_delete(container, make_org):
    _, org_id = make_org()
    for sql in ("UPDATE audit_log SET action = 'x' WHERE org_id = %s", "DELETE FROM audit_log WHERE org_id = %s"):
        with pytest.raises(Exception, match="append-only"), container.db.transaction() as tx:
            tx.execute(sql, org_id)


def _tamper(container, statements):
    # Tampering needs the superuser to switch the append-only triggers off, as an attacker with
    # database access would.
    with container.db.transaction() as tx:
        tx.execute("SET LOCAL session_replication_role = replica")
        for sql, *args in statements:
            tx.execute(sql, *args)


def _org_with_entries(make_org, member):
    admin, org_id = make_org()
    for role in ("viewer", "operator", "approver"):
        member(admin, org_id, role)
    admin.put(f"/orgs/{org_id}/preferences", json={"data": {"a": 1}})
    assert admin.get(f"/orgs/{org_id}/audit/verify").body["ok"] is True
    return admin, org_id


def test_verify_detects_an_edited_row(container, make_org, member):
    admin, org_id = _org_with_entries(make_org, member)
    _tamper(container, [("UPDATE audit_log SET details = '{\"role\": \"admin\"}' WHERE org_id = %s AND seq = 3",
                         org_id)])
    result = admin.get(f"/orgs/{org_id}/audit/verify").body
    assert result["ok"] is False and result["first_broken_seq"] == 3 and "modified" in result["problem"]


def test_verify_detects_a_deleted_row(container, make_org, member):
    admin, org_id = _org_with_entries(make_org, member)
    _tamper(container, [("DELETE FROM audit_log WHERE org_id = %s AND seq = 4", org_id)])
    result = admin.get(f"/orgs/{org_id}/audit/verify").body
    assert result["ok"] is False and result["first_broken_seq"] == 4


def test_verify_detects_a_deleted_tail(container, make_org, member):
    admin, org_id = _org_with_entries(make_org, member)
    _tamper(container, [("DELETE FROM audit_log WHERE org_id = %s AND seq = (SELECT max(seq) FROM audit_log "
                         "WHERE org_id = %s)", org_id, org_id)])
    result = admin.get(f"/orgs/{org_id}/audit/verify").body
    assert result["ok"] is False and "trailing" in result["problem"]


def test_verify_detects_swapped_rows(container, make_org, member):
    admin, org_id = _org_with_entries(make_org, member)
    _tamper(container, [
        ("UPDATE audit_log SET seq = -1 WHERE org_id = %s AND seq = 2", org_id),
        ("UPDATE audit_log SET seq = 2 WHERE org_id = %s AND seq = 3", org_id),
        ("UPDATE audit_log SET seq = 3 WHERE org_id = %s AND seq = -1", org_id),
    ])
    result = admin.get(f"/orgs/{org_id}/audit/verify").body
    assert result["ok"] is False and result["first_broken_seq"] == 2


def test_chains_are_per_org(make_org):
    a_admin, a_org = make_org()
    b_admin, b_org = make_org()
    a_admin.put(f"/orgs/{a_org}/preferences", json={"data": {"x": 1}})
    assert [e["action"] for e in b_admin.get(f"/orgs/{b_org}/audit").body["items"]] == ["member.added",
                                                                                        "org.created"]
    assert b_admin.get(f"/orgs/{a_org}/audit").status == 404


def test_concurrent_appends_keep_one_unbroken_chain(container, make_org):
    """Appends racing on one org, starting from an org with no head yet, serialise on the head."""
    admin, org_id = make_org()
    fresh = "org_concurrent_" + org_id[-8:]
    with container.db.transaction() as tx:
        tx.execute("INSERT INTO orgs (id, name, created_by) VALUES (%s, 'Racing', %s)", fresh,
                   admin.get("/me").body["user"]["id"])
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def append(n: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                with container.db.transaction() as tx:
                    container.audit.append(tx, org_id=fresh, actor="test", action="race", target=f"{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = container.audit.verify(fresh)
    assert result.ok and result.checked == 60 and result.head_seq == 60, result
    with container.db.read() as tx:
        seqs = [r["seq"] for r in tx.fetch_all("SELECT seq FROM audit_log WHERE org_id = %s ORDER BY seq", fresh)]
    assert seqs == list(range(1, 61))


def test_an_append_for_an_org_without_a_chain_fails_and_takes_its_transaction_along(container, make_org):
    """Every org gets its chain's head when it is created; an append for anything else must fail
    loudly (the held-back insert has no seq), never drop the entry silently."""
    _, org_id = make_org()

    def change_and_append_for_no_org() -> None:
        with container.db.transaction() as tx:
            tx.execute("INSERT INTO org_preferences (org_id, data, updated_by) VALUES (%s, '{}'::jsonb, %s)",
                       org_id, "test")
            container.audit.append(tx, org_id="org_that_does_not_exist", actor="test", action="probe", target="x")

    with pytest.raises(QueryError, match="seq"):
        change_and_append_for_no_org()
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM audit_log WHERE org_id = %s", "org_that_does_not_exist") == 0
        assert tx.fetch_val("SELECT count(*) FROM org_preferences WHERE org_id = %s", org_id) == 0
    with container.db.read() as tx:
        fresh = tx.fetch_one("SELECT seq, hash FROM audit_heads WHERE org_id = %s", org_id)
    assert fresh is not None and fresh["seq"] >= 1  # created with the org, moved by its entries


# The API refuses U+0000 and lone surrogates (PostgreSQL's text cannot hold them), so no audited
# value carries them.
_text = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)))
_awkward = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["seq", "target", "a", "é", '"q"', "x y"]) | _text,
                                            inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(details=st.dictionaries(_text, _awkward, max_size=4), target=_text.filter(lambda t: len(t) <= 40),
       actor=_text.filter(lambda t: 1 <= len(t) <= 20))
def test_the_database_hashes_an_entry_as_verify_does(container, make_org, details, target, actor):
    """The head moves and the hash is computed in SQL; verify recomputes it in Python from the row.
    Unicode, quotes, control characters and details keyed "seq"/"target" must agree byte for byte."""
    _, org_id = make_org()
    with container.db.transaction() as tx:
        container.audit.append(tx, org_id=org_id, actor=actor, action="probe", target=target, details=details)
    result = container.audit.verify(org_id)
    assert result.ok, result


@given(details=st.dictionaries(st.text(), _awkward, max_size=4), target=st.text(), seq=st.integers(1, 10**12))
def test_around_seq_splits_the_canonical_json_where_seq_goes(details, target, seq):
    body = {"org_id": "org_x", "id": "aud_x", "occurred_at": "2026-11-24T00:00:00.000000+00:00", "actor": "a",
            "action": "probe", "target": target, "details": details}
    prefix, suffix = around_seq(body)
    assert prefix + str(seq) + suffix == canonical_json({**body, "seq": seq})
