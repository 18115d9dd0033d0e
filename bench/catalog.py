"""Catalog search latency over 10,000 listings, through the gateway.

    .venv/bin/python bench/catalog.py [--listings 10000] [--rounds 5] [--requests 200] [--no-http]

Starts a fresh embedded PostgreSQL in a temporary directory, applies the migrations, creates 40
publisher orgs and bulk-loads generated listings (each manifest validated by the real model; rows
built by the catalog service's own ``listing_fields``/``catalog_words``, written with multi-row
INSERTs; install counts and rating aggregates are generated, not derived from reviews). Then, for
each typical search, it measures the latency of one client issuing requests back to back:

* ``test client``: the gateway in this process through Flask's test client (routing, auth,
  parsing, the service, PostgreSQL, JSON encoding; no sockets);
* ``http``: the same gateway in a child process behind werkzeug's threaded server with HTTP/1.1
  keep-alive (as ``marketplace up`` serves it), over a real TCP connection.

Each round runs every scenario ``--requests`` times after a warm-up; the table quotes the median,
over rounds, of each round's p50 and p99. Finally it prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the
statement each scenario runs, to show the indexes used.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder comes first on sys.path: import from the repository root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(1, str(ROOT / "tests"))  # support.wsgi

from shared.catalog import (  # noqa: E402  # noqa: E402
    AgentManifest,
    CatalogSearch,
    catalog_words,
    listing_fields,
    pricing_micros,
)
from shared.composition import Container, build_container  # noqa: E402
from shared.identity import Principal  # noqa: E402
from shared.kernel.settings import Settings  # noqa: E402

_DOMAIN_WORDS = """cost anomaly detection spend budget forecast billing invoice savings rightsizing idle
kubernetes cluster container node pod autoscaling helm terraform cloud aws azure gcp serverless
security vulnerability compliance audit policy secrets identity access threat incident response
monitoring logging metrics tracing alerting dashboard latency uptime outage oncall runbook
database backup migration replication query index schema warehouse pipeline etl streaming kafka
support ticket customer chat triage escalation knowledge sentiment churn sales lead crm pipeline
email outreach forecast revenue pricing quota contract renewal onboarding devops deploy release
rollback canary testing flaky build cache artifact dependency license scanner sbom container image
network firewall dns certificate expiry storage bucket snapshot retention tagging governance
finops focus report chargeback showback reservation commitment discount optimization agent"""
DOMAIN = list(dict.fromkeys(_DOMAIN_WORDS.split()))

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "qui", "zel", "nax", "pro", "dul", "fen", "gar", "sol",
             "bri", "mon", "tal", "vex", "rin", "zu", "pa", "de", "sto", "lin", "ber"]
CATEGORIES = ["finops", "security", "devops", "data", "support", "sales", "other"]

SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("text query", {"q": "cost anomaly"}),
    ("text query, one word", {"q": "kubernetes"}),
    ("typo query", {"q": "anomoly detection"}),
    ("typo query, one word", {"q": "kubernetse"}),
    ("filter + sort", {"category": "finops", "pricing_model": "usage", "deployment_type": "byoc",
                       "min_rating": "3", "sort": "rating"}),
    ("text + filter + sort", {"q": "security", "category": "security", "sort": "installs"}),
    ("2nd page, relevance", {"q": "monitoring", "limit": 20, "page": 2}),
    ("2nd page, newest", {"sort": "newest", "limit": 20, "page": 2}),
]


def synthetic_words(rng: random.Random, count: int) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def generate_manifest(rng: random.Random, index: int, vocabulary: list[str], weights: list[float]) -> dict[str, Any]:
    def words(n: int) -> list[str]:
        return rng.choices(vocabulary, weights=weights, k=n)

    title = words(rng.randint(2, 3))
    model = rng.random()
    pricing: dict[str, str] = {"base_usd": "0", "per_record_usd": "0", "per_cpu_hour_usd": "0"}
    if model > 0.2:
        pricing.update(base_usd=f"{rng.randint(0, 200) / 100:.2f}", per_record_usd=f"0.00{rng.randint(1, 9)}",
                       per_cpu_hour_usd=f"{rng.randint(10, 90) / 100:.2f}")
    if model > 0.75:
        pricing["subscription_monthly_usd"] = str(rng.choice([9, 29, 99, 299]))
    return {
        "name": f"{'-'.join(title)}-{index}",
        "version": f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        "display_name": " ".join(w.capitalize() for w in title),
        "description": " ".join(words(rng.randint(12, 40))).capitalize() + ".",
        "category": rng.choice(CATEGORIES),
        "tags": sorted(set(words(rng.randint(1, 4)))),
        "publisher": "Bench Publisher",
        "runtime": {"framework": "langgraph", "entrypoint": "bench_agent.graph:build_graph"},
        "permissions": ["billing:read"],
        "tools": [{"name": "billing.read", "description": "Read billing", "permissions": ["billing:read"]}],
        "pricing": pricing,
        "deployment": rng.choice([["saas"], ["byoc"], ["saas", "byoc"]]),
    }


def _insert_rows(container: Container, table: str, columns: list[str], casts: list[str],
                 rows: list[list[Any]], batch: int = 400) -> None:
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        one = "(" + ", ".join(f"%s{cast}" for cast in casts) + ")"
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * len(chunk))
        with container.db.transaction() as tx:
            tx.execute(sql, *[value for row in chunk for value in row])


def load_listings(container: Container, count: int, seed: int = 7) -> float:
    """Generate, validate and insert ``count`` approved listings; returns the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(seed)
    # Zipf-like frequencies, as in real descriptions: the domain words are the common ones (each in
    # roughly 0.5-10 % of the listings), thousands of made-up words form the long tail.
    domain = list(DOMAIN)
    rng.shuffle(domain)
    vocabulary = domain + synthetic_words(rng, 3000)
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(vocabulary))]
    publishers = []
    with container.db.transaction() as tx:
        owner = container.users.ensure(tx, "bench-publisher@example.com")
    principal = Principal(kind="user", subject=owner.id)
    for n in range(40):
        org = container.orgs.create(principal, f"{rng.choice(SYLLABLES).capitalize()}{rng.choice(SYLLABLES)} "
                                               f"{rng.choice(['Labs', 'Systems', 'Cloud', 'AI', 'Works'])} {n}")
        publishers.append((org.id, org.name))
    agents, versions, terms = [], [], set()
    now = time.time()
    for index in range(count):
        manifest = AgentManifest.model_validate(generate_manifest(rng, index, vocabulary, weights))
        org_id, org_name = rng.choice(publishers)
        f = listing_fields(manifest)
        agent_id = f"agt_bench{index:08d}"
        published = now - rng.uniform(0, 365 * 86400)
        rated = rng.random() < 0.7
        agents.append([agent_id, manifest.name, org_id, org_name, *f.params(), manifest.version,
                       int(rng.paretovariate(1.2)) - 1,
                       f"{rng.uniform(1, 5):.2f}" if rated else "0", rng.randint(1, 300) if rated else 0,
                       principal.actor, published, published, published])
        versions.append([agent_id, manifest.version, json.dumps(manifest.model_dump(mode="json")),
                         json.dumps({"previous_version": None, "added": list(manifest.permissions), "removed": [],
                                     "unchanged": [], "needs_consent": bool(manifest.permissions)}),
                         principal.actor])
        terms.update(catalog_words(manifest.name.replace("-", " "), manifest.display_name, manifest.description,
                                   " ".join(manifest.tags), manifest.category.value, org_name))
        assert pricing_micros(manifest)["base_micros"] >= 0
    _insert_rows(container, "agents", [
        "id", "name", "publisher_org_id", "publisher_name", "display_name", "description", "category", "tags",
        "pricing_model", "pricing", "deployment_types", "latest_version", "install_count", "rating_avg",
        "rating_count", "created_by", "created_at", "updated_at", "published_at", "status"],
        ["", "", "", "", "", "", "", "::text[]", "", "::jsonb", "::text[]", "", "", "::numeric", "", "",
         "::timestamptz", "::timestamptz", "::timestamptz", ""],
        [[*row[:16], *(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t)) for t in row[16:19]),
          "approved"] for row in agents])
    _insert_rows(container, "agent_versions",
                 ["agent_id", "version", "manifest", "permission_diff", "submitted_by", "status"],
                 ["", "", "::jsonb", "::jsonb", "", ""], [[*row, "approved"] for row in versions])
    with container.db.transaction() as tx:
        tx.execute("INSERT INTO catalog_terms (term) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                   sorted(terms))
    with container.db.connection() as conn:
        for table in ("agents", "agent_versions", "catalog_terms"):
            conn.execute(f"ANALYZE {table}")
    return time.perf_counter() - started


# -- measuring ------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def scenario_query(params: dict[str, Any], first_page: Callable[[dict[str, Any]], dict[str, Any]]
                   ) -> dict[str, Any]:
    """The query string of a scenario; a "page 2" scenario gets the cursor of its first page."""
    query = {k: v for k, v in params.items() if k != "page"}
    if params.get("page") == 2:
        cursor = first_page(query)["next_cursor"]
        assert cursor, "the first page has no next page"
        query["cursor"] = cursor
    return query


def measure(get: Callable[[dict[str, Any]], dict[str, Any]], query: dict[str, Any], requests: int,
            warmup: int = 30) -> tuple[float, float]:
    for _ in range(warmup):
        get(query)
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        get(query)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return percentile(samples, 0.5), percentile(samples, 0.99)


def test_client_getter(app: Any, token: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    client = app.test_client()

    def get(query: dict[str, Any]) -> dict[str, Any]:
        resp = client.get("/agents", query_string=query, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        body: dict[str, Any] = resp.get_json()
        return body
    return get


def http_getter(port: int, token: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(query: dict[str, Any]) -> dict[str, Any]:
        conn.request("GET", "/agents?" + urllib.parse.urlencode(query), headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        body: dict[str, Any] = json.loads(data)
        return body
    return get


def serve(data_dir: Path) -> None:
    """Child process: the gateway on the bench database, on a free port, until killed; prints
    ``READY <url>``."""
    from support.wsgi import serve_wsgi

    from functions.gateway import create_gateway

    app = create_gateway(build_container(Settings(mode="local", data_dir=data_dir), migrate=False))
    with serve_wsgi(app, log_requests=False) as url:
        print(f"READY {url}", flush=True)
        threading.Event().wait()  # until the parent terminates this process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-http", action="store_true", help="only the in-process test client")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return

    import logging

    logging.disable(logging.INFO)  # the per-request access log would dominate what is measured
    from functions.gateway import create_gateway
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="marketplace-catalog-bench-"))
    base.chmod(0o755)  # as root, PostgreSQL runs as an unprivileged user who must traverse it
    data_dir = base / "data"
    child: subprocess.Popen[str] | None = None
    container = build_container(Settings(mode="local", data_dir=data_dir))
    try:
        seconds = load_listings(container, args.listings)
        print(f"loaded {args.listings:,} listings in {seconds:.1f} s "
              f"(machine: {os.cpu_count()} cores, Python {sys.version.split()[0]})")
        getters: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        token = container.identity.dev_grant("bench-reader@example.com").access_token
        getters["test client"] = test_client_getter(create_gateway(container), token)
        if not args.no_http:
            child = subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
            assert child.stdout is not None
            ready = child.stdout.readline()
            port = urllib.parse.urlsplit(ready.split()[1]).port if ready.startswith("READY ") else None
            if port is None:
                raise RuntimeError(f"the HTTP server did not start: {ready}")
            getters["http"] = http_getter(port, token)

        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):
            for label, params in SCENARIOS:
                for mode, get in getters.items():
                    query = scenario_query(params, get)
                    sizes[label] = len(get(query)["items"])
                    results.setdefault((label, mode), []).append(measure(get, query, args.requests))

        print(f"\n{args.rounds} rounds x {args.requests} sequential requests per scenario and mode; "
              "medians over rounds")
        print(f"{'scenario':<24}{'items':>6}" + "".join(f"{mode + ' p50':>18}{mode + ' p99':>18}" for mode in getters))
        worst = 0.0
        for label, _ in SCENARIOS:
            line = f"{label:<24}{sizes[label]:>6}"
            for mode in getters:
                p50 = statistics.median(r[0] for r in results[(label, mode)])
                p99 = statistics.median(r[1] for r in results[(label, mode)])
                worst = max(worst, p99)
                line += f"{p50:>15.2f} ms{p99:>15.2f} ms"
            print(line)
        print(f"worst p99: {worst:.2f} ms (target <= 20 ms)")

        print("\nquery plans (EXPLAIN ANALYZE of the statement GET /agents runs):")
        first = getters["test client"]
        for label, params in SCENARIOS:
            query = scenario_query(params, first)
            search = CatalogSearch(**{k: (Decimal(v) if k == "min_rating" else v)
                                      for k, v in query.items() if k != "limit"},
                                   limit=int(query.get("limit", 20)))
            print(f"\n--- {label}: {query.get('q', '')!r} "
                  f"{ {k: v for k, v in query.items() if k not in ('q', 'cursor')} }")
            print(container.catalog.explain_search(search))
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
        container.close()
        EmbeddedPostgres(data_dir).stop(force=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
