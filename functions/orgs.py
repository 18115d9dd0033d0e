"""Organisations: create, read, members, API keys and preferences."""

from __future__ import annotations

from functions.operation import ADMIN, ANY_MEMBER, Call, Reply, operation
from shared.identity import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    MemberAdd,
    MemberOut,
    MemberUpdate,
    OrgCreate,
    OrgOut,
    Preferences,
    PreferencesOut,
)
from shared.kernel.errors import ErrorCode
from shared.kernel.pagination import Page
from shared.secrets import KeyRotated


@operation("POST", "/orgs", summary="Create an organisation", tags=["orgs"], body=OrgCreate, response=OrgOut,
           status=201, errors={422: ErrorCode.USER_REQUIRED})
def create_org(call: Call) -> OrgOut:
    return call.services.orgs.create(call.caller, call.body.name)


@operation("GET", "/orgs/{org_id}", summary="Read an organisation", tags=["orgs"], roles=ANY_MEMBER,
           response=OrgOut)
def get_org(call: Call) -> OrgOut:
    return call.services.orgs.get(call.org_id, role=call.role)


@operation("GET", "/orgs/{org_id}/members", summary="List members", tags=["orgs"], roles=ANY_MEMBER,
           response=Page[MemberOut])
def list_members(call: Call) -> Page[MemberOut]:
    return Page[MemberOut](items=call.services.orgs.list_members(call.org_id))


@operation("POST", "/orgs/{org_id}/members", summary="Add a member", tags=["orgs"], roles=ADMIN,
           body=MemberAdd, response=MemberOut, status=201, errors={409: ErrorCode.ALREADY_MEMBER})
def add_member(call: Call) -> MemberOut:
    return call.services.orgs.add_member(call.caller, call.org_id, call.body.email, call.body.role)


@operation("PATCH", "/orgs/{org_id}/members/{user_id}", summary="Change a member's role", tags=["orgs"],
           roles=ADMIN, body=MemberUpdate, response=MemberOut, errors={409: ErrorCode.LAST_ADMIN})
def update_member(call: Call) -> MemberOut:
    return call.services.orgs.change_role(call.caller, call.org_id, call.params["user_id"], call.body.role)


@operation("DELETE", "/orgs/{org_id}/members/{user_id}", summary="Remove a member", tags=["orgs"],
           roles=ADMIN, status=204, errors={409: ErrorCode.LAST_ADMIN})
def remove_member(call: Call) -> Reply:
    call.services.orgs.remove_member(call.caller, call.org_id, call.params["user_id"])
    return Reply(status=204)


@operation("POST", "/orgs/{org_id}/api-keys", summary="Create an API key", tags=["orgs"], roles=ADMIN,
           body=ApiKeyCreate, response=ApiKeyCreated, status=201)
def create_api_key(call: Call) -> ApiKeyCreated:
    return call.services.orgs.create_api_key(call.caller, call.org_id, call.body.name, call.body.role)


@operation("GET", "/orgs/{org_id}/api-keys", summary="List API keys", tags=["orgs"], roles=ADMIN,
           response=Page[ApiKeyOut])
def list_api_keys(call: Call) -> Page[ApiKeyOut]:
    return Page[ApiKeyOut](items=call.services.orgs.list_api_keys(call.org_id))


@operation("DELETE", "/orgs/{org_id}/api-keys/{key_id}", summary="Revoke an API key", tags=["orgs"],
           roles=ADMIN, response=ApiKeyOut)
def revoke_api_key(call: Call) -> ApiKeyOut:
    return call.services.orgs.revoke_api_key(call.caller, call.org_id, call.params["key_id"])


@operation("GET", "/orgs/{org_id}/preferences", summary="Read preferences", tags=["orgs"], roles=ANY_MEMBER,
           response=PreferencesOut)
def get_preferences(call: Call) -> PreferencesOut:
    return call.services.orgs.get_preferences(call.org_id)


@operation("PUT", "/orgs/{org_id}/preferences", summary="Replace preferences", tags=["orgs"], roles=ADMIN,
           body=Preferences, response=PreferencesOut)
def put_preferences(call: Call) -> PreferencesOut:
    return call.services.orgs.put_preferences(call.caller, call.org_id, call.body.data)


@operation("POST", "/orgs/{org_id}/secret-keys/rotate", summary="Rotate the org's data key", tags=["orgs"],
           roles=ADMIN, response=KeyRotated, errors={409: ErrorCode.CONFLICT})
def rotate_org_key(call: Call) -> KeyRotated:
    # A new data key seals the org's secrets from now on (in every server process within the key
    # cache's lifetime); older keys keep opening what they sealed, re-sealed in the background.
    return call.services.secrets.rotate(call.org_id, actor=call.caller.actor)
