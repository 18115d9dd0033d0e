"""The public catalog: search relevance, typo tolerance, filters, sorts, keyset pagination, reviews."""

from __future__ import annotations

import base64
import json
import threading
from decimal import ROUND_HALF_UP, Decimal

import pytest
from registry_support import audit_actions, make_manifest, publish, record_install, unique_word


@pytest.fixture
def publisher(make_org, member, make_user):
    admin, org_id = make_org("Northwind Labs")
    dev = member(admin, org_id, "developer")
    padmin = make_user("platform", platform_admin=True)

    def release(**fields):
        return publish(dev, org_id, padmin, make_manifest(**fields))

    release.admin, release.dev, release.org_id, release.padmin = admin, dev, org_id, padmin
    return release


@pytest.fixture
def shopper(make_user):
    return make_user("shopper")


def search(client, **params):
    resp = client.get("/agents", query_string=params)
    assert resp.status == 200, resp
    return resp.body


def ids(body):
    return [item["id"] for item in body["items"]]


def test_the_public_catalog_is_readable_without_signing_in(publisher, anon):
    """SPEC §3: the catalog, a listing, its versions and its reviews are for anyone, signed in or
    not; what is not published stays hidden, and a credential that is sent is still verified."""
    word = unique_word()
    agent_id = publisher(display_name=f"{word.capitalize()} Public")
    assert agent_id in ids(search(anon, q=word))
    listing = anon.get(f"/agents/{agent_id}")
    assert listing.status == 200 and listing.body["listing"]["id"] == agent_id, listing
    version = listing.body["versions"][0]["version"]
    assert anon.get(f"/agents/{agent_id}/versions/{version}").status == 200
    assert anon.get(f"/agents/{agent_id}/reviews").body["items"] == []
    # Not published: the same 404 as for no listing at all.
    pending = publisher.dev.post("/agents", json={"org_id": publisher.org_id,
                                                   "manifest": make_manifest(display_name="Still In Review")})
    assert pending.status == 201, pending
    assert anon.get(f"/agents/{pending.body['listing']['id']}").status == 404
    assert publisher.dev.get(f"/agents/{pending.body['listing']['id']}").status == 200  # its publisher sees it
    # A bad credential is refused, not ignored; writes still need one.
    assert anon.get("/agents", headers={"Authorization": "Bearer nope"}).status == 401
    assert anon.post("/agents", json={"org_id": publisher.org_id, "manifest": make_manifest()}).status == 401


def test_relevance_puts_the_title_match_first(publisher, shopper):
    word = unique_word()
    decoys = [publisher(description=f"Mentions {word} in passing, among other things."),
              publisher(description=f"{word} {word} {word}: keyword stuffing in the description."),
              publisher(tags=[word[:30]], description="Tagged only.")]
    target = publisher(display_name=f"{word.capitalize()} Optimizer", description="Saves money.")
    unrelated = publisher(description="Nothing to see here.")

    body = search(shopper, q=word)
    found = ids(body)
    assert found[0] == target, body
    assert set(found) == {target, *decoys}
    assert unrelated not in found
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)

    # Every word must match: the title word plus a word only the target has.
    assert ids(search(shopper, q=f"{word} optimizer")) == [target]
    # The publisher's name is searchable too.
    assert target in ids(search(shopper, q=f"northwind {word}"))


@pytest.mark.parametrize("typo", ["substitute", "delete", "insert", "transpose_end"])
def test_a_one_letter_typo_still_finds_it(publisher, shopper, typo):
    word = unique_word(5)
    target = publisher(display_name=f"{word.capitalize()} Analyzer")
    decoy = publisher(description=f"Sometimes mentions {word}.")
    middle = len(word) // 2
    replacement = "q" if word[middle] != "q" else "j"
    misspelt = {
        "substitute": word[:middle] + replacement + word[middle + 1:],
        "delete": word[:middle] + word[middle + 1:],
        "insert": word[:middle] + "y" + word[middle:],
        "transpose_end": word[:-2] + word[-1] + word[-2],
    }[typo]
    assert misspelt != word
    found = ids(search(shopper, q=misspelt))
    # Other tests' listings share the database and may hold a word one letter away too: what
    # matters is that the typo finds both, the title match first.
    assert found[0] == target and [f for f in found if f in (target, decoy)] == [target, decoy], (misspelt, found)
    # A typo in one word of several still finds it.
    assert ids(search(shopper, q=f"{misspelt} analyzer")) == [target]


def test_prefix_of_a_long_word_finds_it(publisher, shopper):
    word = unique_word(5)
    target = publisher(display_name=f"{word.capitalize()} Agent")
    assert target in ids(search(shopper, q=word[:-2]))


def test_search_ignores_punctuation_and_operators(publisher, shopper):
    word = unique_word()
    target = publisher(display_name=f"{word.capitalize()} Helper")
    assert ids(search(shopper, q=f"'{word}' & | ! <-> :*")) == [target]
    assert search(shopper, q="!!! ???")["items"] is not None  # no words: a plain browse, not an error


def test_filters(publisher, shopper):
    word = unique_word()
    text = f"About {word}."
    free_saas = publisher(description=text, category="security", deployment=["saas"],
                          pricing={"base_usd": "0", "per_record_usd": "0", "per_cpu_hour_usd": "0"})
    usage_byoc = publisher(description=text, category="finops", deployment=["byoc"])
    subscription = publisher(description=text, category="finops", deployment=["saas", "byoc"],
                             pricing={"base_usd": "0", "per_record_usd": "0", "per_cpu_hour_usd": "0",
                                      "subscription_monthly_usd": "99"})
    hybrid = publisher(description=text, category="devops", deployment=["saas"],
                       pricing={"base_usd": "1", "per_record_usd": "0", "per_cpu_hour_usd": "0",
                                "subscription_monthly_usd": "10"})

    def found(**filters):
        return set(ids(search(shopper, q=word, **filters)))

    assert found() == {free_saas, usage_byoc, subscription, hybrid}
    assert found(category="finops") == {usage_byoc, subscription}
    assert found(pricing_model="free") == {free_saas}
    assert found(pricing_model="usage") == {usage_byoc}
    assert found(pricing_model="subscription") == {subscription}
    assert found(pricing_model="hybrid") == {hybrid}
    assert found(deployment_type="byoc") == {usage_byoc, subscription}
    assert found(deployment_type="saas", category="finops") == {subscription}
    assert found(category="support") == set()
    bad = shopper.get("/agents", query_string={"category": "gaming"})
    assert bad.status == 422 and bad.body["error"]["details"][0]["path"] == "category"
    assert shopper.get("/agents", query_string={"min_rating": "6"}).status == 422
    assert shopper.get("/agents", query_string={"sort": "random"}).status == 422
    assert shopper.get("/agents", query_string={"sort": "relevance"}).status == 422  # relevance needs q


def test_sorts(container, publisher, shopper, make_org):
    word = unique_word()
    first, second, third = (publisher(description=f"Handles {word} number {n}.") for n in range(3))
    with container.db.transaction() as tx:
        for agent_id, installs in ((first, 5), (second, 50), (third, 1)):
            container.catalog.adjust_install_count(tx, agent_id, installs)
    assert ids(search(shopper, q=word, sort="installs")) == [second, first, third]
    assert ids(search(shopper, q=word, sort="newest")) == [third, second, first]

    for agent_id, rating in ((first, 4), (third, 2)):
        admin, org_id = make_org("Customer")
        record_install(container, org_id, agent_id)
        assert admin.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": rating}).status == 201
    assert ids(search(shopper, q=word, sort="rating")) == [first, third, second]
    assert ids(search(shopper, q=word, min_rating="3")) == [first]
    assert set(ids(search(shopper, q=word, min_rating="2"))) == {first, third}


@pytest.mark.parametrize("sort", ["relevance", "newest", "installs", "rating"])
def test_pagination_is_stable_under_inserts(container, publisher, shopper, sort):
    word = unique_word()
    existing = []
    for n in range(7):
        # Varied relevance (title vs description) and a few equal sort keys to exercise the id tie-break.
        fields = {"display_name": f"{word.capitalize()} {n}"} if n % 3 == 0 else {"description": f"{word} #{n}"}
        existing.append(publisher(**fields))
    with container.db.transaction() as tx:
        for n, agent_id in enumerate(existing):
            container.catalog.adjust_install_count(tx, agent_id, n % 2)

    seen: list[str] = []
    inserted: list[str] = []
    cursor = None
    for page in range(20):
        params = {"q": word, "sort": sort, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = search(shopper, **params)
        seen += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # New listings arrive between pages, some of them more relevant than anything seen so far.
        inserted.append(publisher(display_name=f"{word.capitalize()} Late {page}"))
        inserted.append(publisher(description=f"late {word} {page}"))
    assert len(seen) == len(set(seen)), "a listing was returned twice"
    assert set(existing) <= set(seen), "a listing that existed before paging started was skipped"
    assert set(seen) <= set(existing) | set(inserted)


def test_browsing_the_whole_catalog_while_listings_arrive(publisher, shopper):
    before = publisher(description="Browse baseline.")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": "newest", "limit": 50, **({"cursor": cursor} if cursor else {})}
        body = search(shopper, **params)
        seen += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
        publisher(description="Arrives while browsing.")
    assert len(seen) == len(set(seen))
    assert before in seen


def test_cursor_misuse_is_a_400(publisher, shopper):
    word = unique_word()
    for _ in range(3):
        publisher(description=f"{word} again")
    cursor = search(shopper, q=word, limit=1)["next_cursor"]
    assert cursor
    other_query = shopper.get("/agents", query_string={"q": word, "limit": 1, "cursor": cursor, "category": "data"})
    assert other_query.status == 400 and other_query.body["error"]["code"] == "invalid_cursor"
    assert shopper.get("/agents", query_string={"q": word, "cursor": "not-a-cursor!"}).status == 400
    forged = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged["g"] = [["x) | !(y"]]
    tampered = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
    resp = shopper.get("/agents", query_string={"q": word, "limit": 1, "cursor": tampered})
    assert resp.status == 400, resp


@pytest.mark.parametrize(("sort", "field", "value"), [
    ("relevance", "k", ["a lot"]), ("relevance", "k", [1e400]), ("relevance", "k", [True]),
    ("newest", "k", ["not a date"]), ("newest", "k", ["2026-01-01T00:00:00"]), ("newest", "k", [5]),
    ("installs", "k", [2**70]), ("installs", "k", [1.5]), ("installs", "k", ["7"]),
    ("rating", "k", ["NaN", 3]), ("rating", "k", ["4.5", "many"]), ("rating", "k", [["4"], 1]),
    ("newest", "id", "agt\u0000x"), ("newest", "id", 12), ("newest", "id", None),
])
def test_a_cursor_whose_sort_values_are_forged_is_a_400(publisher, shopper, sort, field, value):
    word = unique_word()
    for _ in range(3):
        publisher(description=f"{word} forged")
    cursor = search(shopper, q=word, limit=1, sort=sort)["next_cursor"]
    forged = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged[field] = value
    tampered = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
    resp = shopper.get("/agents", query_string={"q": word, "limit": 1, "sort": sort, "cursor": tampered})
    assert resp.status == 400 and resp.body["error"]["code"] == "invalid_cursor", resp


# -- reviews -------------------------------------------------------------------------------------


def test_review_rules_and_aggregates(container, publisher, make_org, member, make_user):
    agent_id = publisher()
    customer, org_id = make_org("Customer One")

    refused = customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 5, "text": "great"})
    assert refused.status == 403 and refused.body["error"]["code"] == "not_installed"
    record_install(container, org_id, agent_id, status="failed")  # a failed install never ran
    refused = customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 5, "text": "great"})
    assert refused.status == 403 and refused.body["error"]["code"] == "not_installed"

    deployment = record_install(container, org_id, agent_id)
    viewer = member(customer, org_id, "viewer")
    assert viewer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 5}).status == 403
    assert make_user("x").post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 5}).status == 404
    for bad in (0, 6, "5", 4.5):
        assert customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": bad}).status == 422

    created = customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 5, "text": "great"})
    assert created.status == 201, created
    assert created.body["org_name"] == "Customer One" and created.body["rating"] == 5
    listing = customer.get(f"/agents/{agent_id}").body["listing"]
    assert (listing["rating_avg"], listing["rating_count"]) == (5.0, 1)

    # One review per org: posting again (by another member) edits it.
    operator = member(customer, org_id, "operator")
    edited = operator.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 2, "text": "meh"})
    assert edited.status == 200 and edited.body["id"] == created.body["id"]
    listing = customer.get(f"/agents/{agent_id}").body["listing"]
    assert (listing["rating_avg"], listing["rating_count"]) == (2.0, 1)

    # An org that installed and then uninstalled may still review.
    other, other_org = make_org("Customer Two")
    record_install(container, other_org, agent_id, status="uninstalled")
    assert other.post(f"/agents/{agent_id}/reviews", json={"org_id": other_org, "rating": 3}).status == 201
    detail = customer.get(f"/agents/{agent_id}").body
    assert detail["listing"]["rating_count"] == 2 and detail["listing"]["rating_avg"] == 2.5
    assert detail["rating"]["distribution"] == {"1": 0, "2": 1, "3": 1, "4": 0, "5": 0}

    # The publisher cannot review its own agent.
    record_install(container, publisher.org_id, agent_id)
    own = publisher.admin.post(f"/agents/{agent_id}/reviews", json={"org_id": publisher.org_id, "rating": 5})
    assert own.status == 403 and own.body["error"]["code"] == "own_agent"

    actions = audit_actions(customer, org_id)
    assert "review.created" in actions and "review.updated" in actions
    assert customer.get(f"/orgs/{org_id}/audit/verify").body["ok"] is True
    assert deployment


def test_reviews_are_listed_newest_first_with_pagination(container, publisher, make_org, shopper):
    agent_id = publisher()
    posted = []
    for n in range(5):
        admin, org_id = make_org(f"Reviewer {n}")
        record_install(container, org_id, agent_id)
        posted.append(admin.post(f"/agents/{agent_id}/reviews",
                                 json={"org_id": org_id, "rating": 1 + n, "text": f"review {n}"}).body["id"])
    first = shopper.get(f"/agents/{agent_id}/reviews", query_string={"limit": 3})
    assert first.status == 200 and first.body["next_cursor"]
    rest = shopper.get(f"/agents/{agent_id}/reviews", query_string={"limit": 3, "cursor": first.body["next_cursor"]})
    listed = [r["id"] for r in first.body["items"] + rest.body["items"]]
    assert listed == list(reversed(posted))
    assert rest.body["next_cursor"] is None
    assert shopper.get("/agents/agt_missing/reviews").status == 404


def test_suspended_or_pending_agents_cannot_be_reviewed(container, publisher, make_org):
    agent_id = publisher()
    customer, org_id = make_org()
    record_install(container, org_id, agent_id)
    publisher.padmin.post(f"/admin/agents/{agent_id}/suspend", json={"reason": "investigation"})
    resp = customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 4})
    assert resp.status == 404  # hidden from everyone outside the publisher org
    pending = publisher.dev.post("/agents", json={"org_id": publisher.org_id,
                                                  "manifest": make_manifest()}).body["listing"]["id"]
    assert customer.post(f"/agents/{pending}/reviews", json={"org_id": org_id, "rating": 4}).status == 404


def test_concurrent_reviews_keep_the_aggregate_consistent(container, publisher, make_org):
    agent_id = publisher()
    reviewers = []
    for n in range(8):
        admin, org_id = make_org(f"Concurrent {n}")
        record_install(container, org_id, agent_id)
        reviewers.append((admin, org_id, 1 + n % 5))
    results: list[int] = []

    def post(admin, org_id, rating):
        results.append(admin.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": rating}).status)

    threads = [threading.Thread(target=post, args=r) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 8
    ratings = [r[2] for r in reviewers]
    listing = reviewers[0][0].get(f"/agents/{agent_id}").body["listing"]
    assert listing["rating_count"] == 8
    expected = (Decimal(sum(ratings)) / 8).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert listing["rating_avg"] == float(expected)


def test_review_after_an_install_through_the_api(container, publisher, make_org):
    agent_id = publisher()
    name = publisher.dev.get(f"/agents/{agent_id}").body["listing"]["name"]
    customer, org_id = make_org("Real Customer")
    by_name = customer.post(f"/orgs/{org_id}/install", json={"agent_id": name, "deployment_type": "byoc"})
    assert by_name.status == 404, by_name  # installs name the listing by id
    assert customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 4}).status == 403
    installed = customer.post(f"/orgs/{org_id}/install", json={"agent_id": agent_id, "deployment_type": "byoc"})
    assert installed.status == 201, installed
    assert customer.get(f"/agents/{agent_id}").body["listing"]["install_count"] == 1
    assert customer.post(f"/agents/{agent_id}/reviews", json={"org_id": org_id, "rating": 4}).status == 201
    # A suspended agent is refused for new installs.
    publisher.padmin.post(f"/admin/agents/{agent_id}/suspend", json={"reason": "abuse"})
    other, other_org = make_org()
    refused = other.post(f"/orgs/{other_org}/install", json={"agent_id": agent_id, "deployment_type": "byoc"})
    assert refused.status == 409 and refused.body["error"]["code"] == "agent_suspended", refused
