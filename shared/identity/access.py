"""Who may do what: the authorisation rules of SPEC §3, decided here and nowhere else.

An org role grants kinds of action (the role sets below). ``decide`` is the one decision: given
the caller, what an action requires of it and the caller's role in the org the action addresses,
it answers None (allowed) or the error to raise:

- a platform-admin operation for anyone else: 403;
- a data-plane credential outside the data-plane API, or anything else inside it: 403;
- a caller who is not a member of the org (or an org that does not exist): 404, the same answer
  either way, so membership is never disclosed;
- a member whose role does not grant the action: 403, naming the role and the action.

The decorator (``functions/operation.py``, ``roles=``) and the services that decide inside a use
case (publishing, reviewing, starting runs) all go through it. docs/AUTHORISATION.md is the
reader's version of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.identity.models import Principal, Role
from shared.kernel.errors import AppError, ErrorCode, Forbidden, NotFound

#: Read the org and what it holds: members, preferences, deployments, runs, its own listings.
ANY_MEMBER = frozenset({Role.ADMIN, Role.DEVELOPER, Role.OPERATOR, Role.APPROVER, Role.VIEWER})
#: Administer the org: members, API keys, preferences, webhooks, the audit log, upgrade consent.
ADMIN = frozenset({Role.ADMIN})
#: Publish agents (listings and versions) in the org's name.
PUBLISHERS = frozenset({Role.ADMIN, Role.DEVELOPER})
#: Install, upgrade and uninstall agents, and fetch a BYOC bundle.
DEPLOYERS = frozenset({Role.ADMIN, Role.DEVELOPER})
#: Start and cancel runs.
RUNNERS = frozenset({Role.ADMIN, Role.OPERATOR})
#: Review an agent the org installed, in the org's name.
REVIEWERS = frozenset({Role.ADMIN, Role.DEVELOPER, Role.OPERATOR, Role.APPROVER})
#: Decide approvals (SPEC §3 and §5).
APPROVERS = frozenset({Role.ADMIN, Role.APPROVER})

#: The 404's message when the addressed org is the org itself.
ORG_NOT_FOUND = "organisation not found"


@dataclass(frozen=True)
class Need:
    """What an action requires of its caller."""

    #: The org roles that may do it; None for an action that addresses no org.
    roles: frozenset[Role] | None = None
    #: How a 403 names the action: "role 'viewer' may not {doing}".
    doing: str = "do this"
    #: The 404's message for a non-member: it names what the request addressed.
    unknown: str = ORG_NOT_FOUND
    #: Only platform admins may do it.
    platform_admin: bool = False
    #: Only data-plane credentials may do it (and they may do nothing else).
    dataplane: bool = False
    #: Only a signed-in user may do it, not an API key (what it addresses is the user's own).
    user: bool = False


def decide(principal: Principal, need: Need, role: Role | None = None) -> AppError | None:
    """None when ``principal`` may do what ``need`` describes, else the error to raise.

    ``role`` is the caller's role in the org the action addresses (None for a non-member); it is
    read only when ``need.roles`` is set.
    """
    if need.platform_admin and not principal.platform_admin:
        return Forbidden("this operation is for platform admins only")
    if need.dataplane != (principal.key_role == Role.DATAPLANE):
        # Data-plane keys reach only the data-plane API, and only they reach it.
        return Forbidden("this operation is for data-plane credentials only" if need.dataplane
                         else "data-plane credentials may only call the data-plane API")
    if need.user and principal.kind != "user":
        return Forbidden(f"only a signed-in user may {need.doing}, not an API key", code=ErrorCode.USER_REQUIRED)
    if need.roles is None:
        return None
    if role is None:
        # Same answer whether the org exists or not: membership is never disclosed.
        return NotFound(need.unknown)
    if role not in need.roles:
        return Forbidden(f"role '{role.value}' may not {need.doing}")
    return None
