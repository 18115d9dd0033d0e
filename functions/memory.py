"""Memory (issue 17): search Levels 2-4, add Level 3 knowledge, delete a memory, forget a subject.

Roles: members read, developers and admins write knowledge, admins delete and forget. Every
change is audited by the memory service.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import ADMIN, ANY_MEMBER, Call, Reply, operation
from functions.tasks import LEASE_HEADERS, lease_token
from shared.identity import PUBLISHERS
from shared.kernel.errors import ErrorCode
from shared.memory import (
    ContextRequest,
    Forgotten,
    KnowledgeAdded,
    MemoryContext,
    RunLearned,
    SearchOut,
    StoredOut,
)
from shared.runs import RunMemoryScope

#: The knowledge upload's body limit (documents are chunked and embedded on the request).
MAX_KNOWLEDGE_BODY = 1024 * 1024


class MemorySearchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: int = Field(ge=2, le=4, description="2 task summaries, 3 knowledge, 4 episodes.")
    query: str = Field(min_length=1, max_length=2000)
    namespace: str | None = Field(default=None, max_length=64, description="Level 3 only: a knowledge namespace.")
    k: int | None = Field(default=None, ge=1, le=50, description="How many (defaults: 5, 10, 3 by level).")


class KnowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[str] = Field(min_length=1, max_length=20)
    title: str | None = Field(default=None, max_length=200)
    subjects: list[str] = Field(default_factory=list, max_length=20,
                                description="What the documents are about (user:…, resource:…, agent:…).")


class ForgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=3, max_length=210, pattern=r"^[a-z]+:\S+$",
                         description="user:…, resource:… or agent:…")


@operation("GET", "/orgs/{org_id}/memory/search", summary="Search the org's memory", tags=["memory"],
           roles=ANY_MEMBER, query=MemorySearchQuery, response=SearchOut)
def search_memory(call: Call) -> SearchOut:
    q = call.query
    return call.services.memory.search(call.org_id, level=q.level, query=q.query, k=q.k, namespace=q.namespace)


@operation("POST", "/orgs/{org_id}/knowledge/{namespace}", summary="Add knowledge documents", tags=["memory"],
           roles=PUBLISHERS, body=KnowledgeIn, response=KnowledgeAdded, status=201, max_body=MAX_KNOWLEDGE_BODY,
           errors={404: ErrorCode.NOT_FOUND})
def add_knowledge(call: Call) -> KnowledgeAdded:
    body = call.body
    return call.services.memory.add_knowledge(call.org_id, call.params["namespace"], body.documents,
                                              actor=call.caller.actor, subjects=body.subjects, title=body.title)


@operation("DELETE", "/orgs/{org_id}/memory/{memory_id}", summary="Delete one memory", tags=["memory"],
           roles=ADMIN, status=204, errors={404: ErrorCode.NOT_FOUND})
def delete_memory(call: Call) -> Reply:
    call.services.memory.delete(call.org_id, call.params["memory_id"], actor=call.caller.actor)
    return Reply(status=204)


@operation("POST", "/orgs/{org_id}/memory/forget", summary="Forget everything about one subject",
           tags=["memory"], roles=ADMIN, body=ForgetIn, response=Forgotten)
def forget_subject(call: Call) -> Forgotten:
    return call.services.memory.forget(call.org_id, call.body.subject, actor=call.caller.actor)


# -- the data plane: a leased task's memory (the run's org and manifest decide what it gets) --
def _scope(call: Call) -> RunMemoryScope:
    scope: RunMemoryScope = call.services.runs.memory_scope(call.caller, call.params["task_id"], lease_token(call))
    return scope


@operation("POST", "/tasks/{task_id}/memory/context", summary="Load a run's memory context", tags=["data plane"],
           dataplane=True, body=ContextRequest, response=MemoryContext, idempotent=False,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 404: ErrorCode.NOT_FOUND, 409: ErrorCode.LEASE_LOST},
           headers=LEASE_HEADERS)
def load_run_memory(call: Call) -> MemoryContext:
    scope = _scope(call)
    body: ContextRequest = call.body
    return call.services.memory.build_context(scope.org_id, query=body.query, levels=scope.levels,
                                       namespaces=scope.namespaces, budget=body.budget, session=body.session)


@operation("POST", "/tasks/{task_id}/memory", summary="Store what a run learned", tags=["data plane"],
           dataplane=True, body=RunLearned, response=StoredOut, status=201, idempotent=False,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 404: ErrorCode.NOT_FOUND, 409: ErrorCode.LEASE_LOST},
           headers=LEASE_HEADERS)
def store_run_memory(call: Call) -> StoredOut:
    scope = _scope(call)
    return call.services.memory.learn(scope.org_id, agent=scope.agent, run_id=scope.run_id, levels=scope.levels,
                               learned=call.body)
