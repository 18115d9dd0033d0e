"""The authorisation decision (shared/identity/access.py), rule by rule, without HTTP or a database."""

from __future__ import annotations

import pytest

from shared.identity import (
    ADMIN,
    ANY_MEMBER,
    APPROVERS,
    DEPLOYERS,
    PUBLISHERS,
    REVIEWERS,
    RUNNERS,
    Need,
    Principal,
    Role,
    decide,
)
from shared.kernel.errors import ErrorCode, Forbidden, NotFound

USER = Principal(kind="user", subject="usr_1")
PLATFORM_ADMIN = Principal(kind="user", subject="usr_2", platform_admin=True)
DATAPLANE = Principal(kind="api_key", subject="key_1", key_org_id="org_1", key_role=Role.DATAPLANE,
                      deployment_id="dep_1")


def test_a_member_whose_role_grants_the_action_is_allowed() -> None:
    assert decide(USER, Need(roles=RUNNERS), Role.OPERATOR) is None
    assert decide(USER, Need(), None) is None  # an action that addresses no org


def test_a_non_member_gets_404_naming_what_was_addressed() -> None:
    denied = decide(USER, Need(roles=ANY_MEMBER), None)
    assert isinstance(denied, NotFound) and denied.message == "organisation not found"
    denied = decide(USER, Need(roles=ANY_MEMBER, unknown="run not found"), None)
    assert isinstance(denied, NotFound) and denied.message == "run not found"


def test_a_member_without_the_role_gets_403_naming_role_and_action() -> None:
    denied = decide(USER, Need(roles=ADMIN, doing="add a member"), Role.VIEWER)
    assert isinstance(denied, Forbidden) and denied.message == "role 'viewer' may not add a member"


def test_platform_admin_operations() -> None:
    need = Need(platform_admin=True)
    assert decide(PLATFORM_ADMIN, need) is None
    denied = decide(USER, need)
    assert isinstance(denied, Forbidden) and "platform admins" in denied.message
    # The flag grants no role in any org.
    assert isinstance(decide(PLATFORM_ADMIN, Need(roles=ANY_MEMBER), None), NotFound)


def test_data_plane_keys_reach_the_data_plane_api_only_and_only_they_do() -> None:
    assert decide(DATAPLANE, Need(dataplane=True)) is None
    assert isinstance(decide(USER, Need(dataplane=True)), Forbidden)
    assert isinstance(decide(DATAPLANE, Need()), Forbidden)
    # Checked before the org role: a data-plane key is refused, never told whether it is a member.
    assert isinstance(decide(DATAPLANE, Need(roles=ANY_MEMBER), None), Forbidden)


def test_user_only_actions_refuse_every_api_key() -> None:
    org_key = Principal(kind="api_key", subject="key_2", key_org_id="org_1", key_role=Role.ADMIN)
    assert decide(USER, Need(user=True)) is None
    denied = decide(org_key, Need(user=True, doing="list my notifications"))
    assert isinstance(denied, Forbidden) and denied.code == ErrorCode.USER_REQUIRED
    assert "list my notifications" in str(denied)


@pytest.mark.parametrize(("roles", "granted"), [
    (ANY_MEMBER, {"admin", "developer", "operator", "approver", "viewer"}),
    (ADMIN, {"admin"}),
    (PUBLISHERS, {"admin", "developer"}),
    (DEPLOYERS, {"admin", "developer"}),
    (RUNNERS, {"admin", "operator"}),
    (REVIEWERS, {"admin", "developer", "operator", "approver"}),
    (APPROVERS, {"admin", "approver"}),
])
def test_role_sets_match_docs_authorisation(roles: frozenset[Role], granted: set[str]) -> None:
    allowed = {role.value for role in Role if decide(USER, Need(roles=roles), role) is None}
    assert allowed == granted
