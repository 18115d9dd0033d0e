"""The client CLI: what an organisation does with the platform, through its API.

``login``, ``orgs create|list|use``, ``agents search|show``, ``install``, ``deployments list``,
``run``, ``runs list|show|cancel``, ``logs`` and ``report``. Names are accepted where ids are
expected (agents by name, organisations by name), the current organisation is remembered, and a
command about a run takes the latest run when none is named, so nobody copies ids by hand.
Every command takes ``--json``; failures print the API's message and a hint, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import platformdirs

from functions.cli_api import Api, ApiError
from functions.cli_config import DEFAULT_URL, ClientConfig
from functions.cli_errors import CliCode
from functions.cli_output import Output
from shared.kernel.errors import ErrorCode

FINAL_RUN = frozenset({"succeeded", "failed", "cancelled", "dead"})
#: How many of the org's newest runs are searched for a run named by id.
RUN_SEARCH_LIMIT = 1000
INSTALL_WAIT_SECONDS = 120.0


class Session:
    """A command's config, API client and printer."""

    def __init__(self, as_json: bool, url: str | None = None) -> None:
        self.config = ClientConfig.load()
        self.api = Api(self.config, url)
        self.out = Output(as_json)

    # -- the current organisation --

    def memberships(self) -> list[dict[str, Any]]:
        """The caller's organisations (``GET /me``)."""
        return list(self.api.get("/me").get("memberships") or [])

    def org_id(self, ref: str | None = None) -> str:
        """The organisation named by ``ref`` (id or name), else the remembered one, else the
        caller's only one."""
        if ref:
            return str(self.resolve_org(ref)["org_id"])
        if self.config.org_id:
            return self.config.org_id
        orgs = self.memberships()
        if len(orgs) == 1:
            self.remember_org(orgs[0]["org_id"], orgs[0]["org_name"])
            return str(orgs[0]["org_id"])
        raise ApiError(400, CliCode.NO_ORG, "no organisation chosen" if orgs else "you belong to no organisation yet",
                       "create one: marketplace orgs create NAME" if not orgs
                       else "choose one: marketplace orgs use NAME (marketplace orgs list shows them)")

    def resolve_org(self, ref: str) -> dict[str, Any]:
        """A membership by organisation id or name."""
        orgs = self.memberships()
        for org in orgs:
            if ref == org["org_id"]:
                return org
        named = [org for org in orgs if org["org_name"] == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise ApiError(409, CliCode.AMBIGUOUS, f"{len(named)} of your organisations are named {ref!r}",
                           "name it by id (marketplace orgs list shows them)")
        raise ApiError(404, ErrorCode.NOT_FOUND, f"you are not a member of an organisation {ref!r}",
                       "marketplace orgs list shows yours; marketplace orgs create NAME makes one")

    def remember_org(self, org_id: str, name: str | None) -> None:
        """Make an organisation the current one."""
        self.config.org_id, self.config.org_name = org_id, name
        self.config.save()

    # -- agents, deployments and runs by name --

    def agent(self, ref: str) -> dict[str, Any]:
        """An agent listing by id or name (the catalog is public)."""
        return dict(self.api.get(f"/agents/{_seg(ref)}", auth=bool(self.config.access_token)))

    def deployment_for(self, org_id: str, agent_id: str) -> dict[str, Any]:
        """The org's newest live deployment of an agent, ready ones first."""
        live = [d for d in self.api.pages(f"/orgs/{org_id}/deployments", {"limit": 100})
                if d["agent_id"] == agent_id and d["status"] != "uninstalled"]
        if not live:
            raise ApiError(404, ErrorCode.NOT_INSTALLED, "this organisation has not installed the agent",
                           "install it first: marketplace install AGENT")
        live.sort(key=lambda d: (d["status"] == "ready", d["created_at"]), reverse=True)
        return live[0]

    def run(self, run_id: str | None, agent: str | None = None) -> dict[str, Any]:
        """A run by id (the latest run of the org when ``run_id`` is None), as ``GET`` returns it."""
        org_id = self.org_id()
        if run_id is None:
            latest = next(self.api.pages(f"/orgs/{org_id}/runs", {"limit": 1}, limit=1), None)
            if latest is None:
                raise ApiError(404, CliCode.NO_RUNS, "this organisation has no runs yet",
                               "start one: marketplace run AGENT --follow")
            return dict(self.api.get(f"/agents/{latest['agent_id']}/runs/{latest['id']}"))
        if agent is None:
            found = next((r for r in self.api.pages(f"/orgs/{org_id}/runs", {"limit": 100}, limit=RUN_SEARCH_LIMIT)
                          if r["id"] == run_id), None)
            # Not among the org's runs: the API answers for it (with its own message).
            agent = found["agent_id"] if found else self._any_agent(org_id)
        return dict(self.api.get(f"/agents/{_seg(agent)}/runs/{_seg(run_id)}"))

    def _any_agent(self, org_id: str) -> str:
        dep = next(self.api.pages(f"/orgs/{org_id}/deployments", {"limit": 1}, limit=1), None)
        return str(dep["agent_id"]) if dep else "unknown"


def _seg(value: str) -> str:
    """A path segment, escaped."""
    from urllib.parse import quote  # noqa: PLC0415

    return quote(value, safe="")


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print the API's JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(func)


def client_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """A client command: takes ``--json``, gets a :class:`Session` first, and turns an
    :class:`ApiError` into the API's message and a hint (exit status 1)."""

    @json_option
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> int:
        ctx = click.get_current_context()
        as_json = as_json or bool((ctx.find_root().params or {}).get("as_json"))
        session = Session(as_json, kwargs.pop("url", None) if "url" in kwargs else None)
        try:
            result = func(session, *args, **kwargs)
            return int(result or 0)
        except ApiError as exc:
            report_error(session.out, exc)
            return 1
        finally:
            session.api.close()

    return wrapper


def report_error(out: Output, exc: ApiError) -> None:
    """The API's message, its details and a hint (JSON on stdout under ``--json``)."""
    if out.as_json:
        out.json(exc.as_dict())
    message = exc.message
    for detail in exc.details:
        if isinstance(detail, dict) and detail.get("message"):
            where = detail.get("path") or detail.get("loc") or ""
            message += f"\n  {where}: {detail['message']}" if where else f"\n  {detail['message']}"
    out.error(message, exc.hint)


# -- login --

@click.command("login")
@click.option("--url", default=lambda: os.environ.get("MARKETPLACE_URL"),
              help=f"the platform's API (default: MARKETPLACE_URL, else the last one, else {DEFAULT_URL})")
@click.option("--email", default=None, help="local mode: who you are (the development grant)")
@click.option("--issuer", default=lambda: os.environ.get("MARKETPLACE_OIDC_ISSUER"),
              help="gcp mode: the OIDC issuer (default: MARKETPLACE_OIDC_ISSUER)")
@click.option("--client-id", default=lambda: os.environ.get("MARKETPLACE_OIDC_CLIENT_ID"),
              help="gcp mode: the OAuth client id of the CLI (default: MARKETPLACE_OIDC_CLIENT_ID)")
@client_command
def login(s: Session, email: str | None, issuer: str | None, client_id: str | None) -> int:
    """Sign in and remember the platform's URL and your tokens.

    Local mode signs in with the development grant (--email); gcp mode with the OIDC device flow
    (open the link shown, enter the code)."""
    cfg = s.config
    health = s.api.get("/health", auth=False)
    mode = str(health.get("mode", "local"))
    previous = (cfg.url, cfg.email)
    cfg.url, cfg.mode = s.api.url, mode
    if mode == "local":
        if not email:
            raise ApiError(400, CliCode.EMAIL_REQUIRED, "local mode signs you in by email",
                           "marketplace login --email you@example.com")
        tokens = s.api.post("/auth/token", {"grant_type": "dev", "email": email}, auth=False)
        cfg.email = email
        s.api.store_tokens(tokens)
    else:
        if not issuer or not client_id:
            raise ApiError(400, CliCode.OIDC_REQUIRED,
                           f"{s.api.url} runs in {mode} mode: sign in with your identity provider",
                           "marketplace login --issuer https://accounts.example.com --client-id ID "
                           "(or set MARKETPLACE_OIDC_ISSUER and MARKETPLACE_OIDC_CLIENT_ID)")
        s.api.device_login(issuer, client_id, "openid email offline_access",
                           lambda uri, code: s.out.say(f"open {uri} and enter the code {code}"))
    me = s.api.get("/me")
    cfg.email = (me.get("user") or {}).get("email") or cfg.email
    orgs = me.get("memberships") or []
    if previous != (cfg.url, cfg.email) or cfg.org_id not in {o["org_id"] for o in orgs}:
        cfg.org_id = cfg.org_name = None
    if cfg.org_id is None and len(orgs) == 1:
        cfg.org_id, cfg.org_name = orgs[0]["org_id"], orgs[0]["org_name"]
    path = cfg.save()
    if s.out.as_json:
        s.out.json({"url": cfg.url, "mode": cfg.mode, "email": cfg.email, "org_id": cfg.org_id, "config": str(path)})
    else:
        where = f" (organisation {cfg.org_name})" if cfg.org_id else ""
        s.out.success(f"signed in to {cfg.url} as {cfg.email}{where}")
        if cfg.org_id is None:
            s.out.say("next: marketplace orgs create NAME")
    return 0


# -- organisations --

@click.group("orgs")
def orgs() -> None:
    """Your organisations (the current one is remembered)."""


@orgs.command("create")
@click.argument("name")
@client_command
def orgs_create(s: Session, name: str) -> int:
    """Create an organisation and make it the current one."""
    org = s.api.post("/orgs", {"name": name})
    s.remember_org(org["id"], org["name"])
    if s.out.as_json:
        s.out.json(org)
    else:
        s.out.success(f"created organisation {org['name']} ({org['id']}); it is now the current one")
    return 0


@orgs.command("list")
@client_command
def orgs_list(s: Session) -> int:
    """The organisations you belong to (* marks the current one)."""
    items = s.memberships()
    if s.out.as_json:
        s.out.json({"items": items, "current": s.config.org_id})
        return 0
    s.out.table(["", "id", "name", "role"],
                [["*" if o["org_id"] == s.config.org_id else "", o["org_id"], o["org_name"], o["role"]] for o in items])
    return 0


@orgs.command("use")
@click.argument("org")
@client_command
def orgs_use(s: Session, org: str) -> int:
    """Make ORG (a name or an id) the current organisation."""
    found = s.resolve_org(org)
    s.remember_org(found["org_id"], found["org_name"])
    if s.out.as_json:
        s.out.json(found)
    else:
        s.out.success(f"the current organisation is {found['org_name']} ({found['org_id']})")
    return 0


# -- the catalog --

@click.group("agents")
def agents() -> None:
    """Browse the catalog (no sign-in needed)."""


@agents.command("search")
@click.argument("query", required=False)
@click.option("--category", default=None)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@client_command
def agents_search(s: Session, query: str | None, category: str | None, limit: int) -> int:
    """Search the catalog (every published agent without QUERY)."""
    page = s.api.get("/agents", params={k: v for k, v in {"q": query, "category": category, "limit": limit}.items()
                                        if v is not None}, auth=bool(s.config.access_token))
    if s.out.as_json:
        s.out.json(page)
        return 0
    s.out.table(["name", "display name", "category", "version", "pricing", "rating", "installs"],
                [[a["name"], a["display_name"], a["category"], a.get("latest_version"), a["pricing_model"],
                  f"{a['rating_avg']:.1f} ({a['rating_count']})", a["install_count"]] for a in page["items"]])
    return 0


@agents.command("show")
@click.argument("agent")
@client_command
def agents_show(s: Session, agent: str) -> int:
    """An agent's listing, by name or id."""
    detail = s.agent(agent)
    if s.out.as_json:
        s.out.json(detail)
        return 0
    listing = detail["listing"]
    s.out.fields([("name", listing["name"]), ("id", listing["id"]), ("display name", listing["display_name"]),
                  ("publisher", listing.get("publisher_name")), ("category", listing["category"]),
                  ("pricing", listing["pricing_model"]), ("deployment", ", ".join(listing.get("deployment_types", []))),
                  ("versions", ", ".join(v["version"] for v in detail.get("versions", []))),
                  ("rating", f"{listing.get('rating_avg', 0):.1f} ({listing.get('rating_count', 0)} reviews)"),
                  ("description", listing["description"])])
    return 0


# -- installs and deployments --

def _config_from(config_file: str | None, settings: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if config_file:
        import yaml  # noqa: PLC0415

        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ApiError(400, CliCode.BAD_CONFIG, f"cannot read {config_file}: {exc}",
                           "give a JSON or YAML object") from None
        if not isinstance(loaded, dict):
            raise ApiError(400, CliCode.BAD_CONFIG, f"{config_file} is not an object", "give a JSON or YAML object")
        config.update(loaded)
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ApiError(400, CliCode.BAD_CONFIG, f"--set {item!r} is not KEY=VALUE", "e.g. --set sensitivity=4")
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    return config


@click.command("install")
@click.argument("agent")
@click.option("--config", "config_file", default=None, help="the deployment's config (JSON or YAML file)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="one config value (repeatable)")
@click.option("--version", default=None, help="the version (default: the latest)")
@click.option("--deployment-type", type=click.Choice(["saas", "byoc"]), default="saas", show_default=True)
@click.option("--org", default=None, help="the organisation (default: the current one)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait until the deployment is ready")
@client_command
def install(s: Session, agent: str, *, config_file: str | None, settings: tuple[str, ...], version: str | None,
            deployment_type: str, org: str | None, wait: bool) -> int:
    """Install AGENT (a name or an id) in the organisation; no config is needed where the agent has defaults."""
    org_id = s.org_id(org)
    listing = s.agent(agent)["listing"]
    body: dict[str, Any] = {"agent_id": listing["id"], "deployment_type": deployment_type,
                            "config": _config_from(config_file, settings)}
    if version:
        body["version"] = version
    dep = s.api.post(f"/orgs/{org_id}/install", body)
    if wait and deployment_type == "saas":
        deadline = time.monotonic() + INSTALL_WAIT_SECONDS
        while dep["status"] in ("pending", "provisioning") and time.monotonic() < deadline:
            time.sleep(0.5)
            dep = s.api.get(f"/orgs/{org_id}/deployments/{dep['id']}")
    if s.out.as_json:
        s.out.json(dep)
    else:
        s.out.success(f"installed {listing['name']} {dep['version']} ({dep['id']}): {dep['status']}")
        if dep["status"] == "ready":
            s.out.say(f"next: marketplace run {listing['name']} --follow")
    return 0


@click.group("deployments")
def deployments() -> None:
    """The organisation's installed agents."""


@deployments.command("list")
@click.option("--org", default=None, help="the organisation (default: the current one)")
@click.option("--status", default=None)
@client_command
def deployments_list(s: Session, org: str | None, status: str | None) -> int:
    """The organisation's deployments."""
    items = list(s.api.pages(f"/orgs/{s.org_id(org)}/deployments", {"limit": 100, "status": status}))
    if s.out.as_json:
        s.out.json({"items": items})
        return 0
    s.out.table(["id", "agent", "version", "type", "status", "created"],
                [[d["id"], d["agent_id"], d["version"], d["deployment_type"], d["status"], d["created_at"][:19]]
                 for d in items])
    return 0


# -- runs --

def _inputs_from(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        inputs = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, CliCode.BAD_INPUT, f"cannot read the inputs from {path}: {exc}",
                       "give a JSON object, e.g. {\"lookback_days\": 30}") from None
    if not isinstance(inputs, dict):
        raise ApiError(400, CliCode.BAD_INPUT, f"{path} holds no JSON object",
                       "give a JSON object, e.g. {\"lookback_days\": 30}")
    return inputs


def _log_line(out: Output, line: dict[str, Any]) -> None:
    if out.as_json:
        click.echo(json.dumps({"event": "log", **line}, default=str))
        return
    when, level = str(line.get("ts", ""))[11:19], str(line.get("level", ""))
    text = f"{when} {level:<7} {line.get('step', '')}: {line.get('message', '')}"
    if out.terminal:
        from rich.markup import escape  # noqa: PLC0415

        style = {"error": "red", "warning": "yellow", "debug": "dim"}.get(str(line.get("level")), "")
        out.out.print(f"[{style}]{escape(text)}[/{style}]" if style else escape(text))
    else:
        click.echo(text)


def _follow(s: Session, run: dict[str, Any], after: int = 0) -> dict[str, Any]:
    """Print the run's log lines as they come, until it ends; the final run."""
    path = f"/agents/{run['agent_id']}/runs/{run['id']}/logs"
    while True:
        for event, data in s.api.events(path, after):
            if event == "log":
                after = max(after, int(data.get("seq", after)))
                _log_line(s.out, data)
        final = dict(s.api.get(f"/agents/{run['agent_id']}/runs/{run['id']}"))
        if final["status"] in FINAL_RUN:
            return final


def _show_run(s: Session, run: dict[str, Any], *, outputs: bool = True) -> None:
    if s.out.as_json:
        s.out.json(run)
        return
    s.out.fields([("run", run["id"]), ("agent", run["agent_id"]), ("deployment", run["deployment_id"]),
                  ("version", run["version"]), ("status", run["status"]), ("attempt", run["attempt"]),
                  ("created", run["created_at"][:19]), ("finished", (run.get("finished_at") or "")[:19]),
                  ("error", run.get("error"))])
    if outputs and run.get("outputs") is not None:
        s.out.say("outputs:")
        s.out.say(json.dumps(run["outputs"], indent=2, ensure_ascii=False, default=str))


@click.command("run")
@click.argument("agent")
@click.option("--input", "input_file", default=None, help='the run\'s inputs: a JSON file ("-" for stdin)')
@click.option("--follow", "-f", is_flag=True, help="print the log lines live, then the outputs")
@click.option("--deployment", default=None, help="the deployment (default: the org's deployment of AGENT)")
@client_command
def run(s: Session, agent: str, input_file: str | None, follow: bool, deployment: str | None) -> int:
    """Start a run of AGENT (a name or an id) on the organisation's deployment of it."""
    inputs = _inputs_from(input_file)
    org_id = s.org_id()
    listing = s.agent(agent)["listing"]
    dep_id = deployment or s.deployment_for(org_id, listing["id"])["id"]
    created = s.api.post(f"/agents/{listing['id']}/runs", {"deployment_id": dep_id, "inputs": inputs})
    if not follow:
        if s.out.as_json:
            s.out.json(created)
        else:
            s.out.success(f"started run {created['id']} ({created['status']})")
            s.out.say(f"follow it: marketplace logs {created['id']} --follow")
        return 0
    if not s.out.as_json:
        s.out.say(f"run {created['id']} started; its log:")
    final = _follow(s, created)
    if s.out.as_json:
        click.echo(json.dumps({"event": "run", **final}, default=str))
    else:
        _show_run(s, final)
        if final["status"] == "succeeded":
            s.out.say("the report: marketplace report --open")
    return 0 if final["status"] == "succeeded" else 1


@click.group("runs")
def runs() -> None:
    """The organisation's runs."""


@runs.command("list")
@click.option("--status", default=None)
@click.option("--agent", default=None, help="only this agent's runs (a name or an id)")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@client_command
def runs_list(s: Session, status: str | None, agent: str | None, limit: int) -> int:
    """The newest runs first."""
    agent_id = s.agent(agent)["listing"]["id"] if agent else None
    items = list(s.api.pages(f"/orgs/{s.org_id()}/runs", {"limit": min(limit, 100), "status": status,
                                                            "agent_id": agent_id}, limit=limit))
    if s.out.as_json:
        s.out.json({"items": items})
        return 0
    s.out.table(["id", "agent", "version", "status", "created", "finished"],
                [[r["id"], r["agent_id"], r["version"], r["status"], r["created_at"][:19],
                  (r.get("finished_at") or "")[:19]] for r in items])
    return 0


@runs.command("show")
@click.argument("run_id", metavar="[RUN]", required=False)
@client_command
def runs_show(s: Session, run_id: str | None) -> int:
    """A run, its outputs and error (the latest run without RUN)."""
    _show_run(s, s.run(run_id))
    return 0


@runs.command("cancel")
@click.argument("run_id", metavar="[RUN]", required=False)
@client_command
def runs_cancel(s: Session, run_id: str | None) -> int:
    """Cancel a run (the latest run without RUN)."""
    found = s.run(run_id)
    done = s.api.post(f"/agents/{found['agent_id']}/runs/{found['id']}/cancel")
    if s.out.as_json:
        s.out.json(done)
    else:
        s.out.success(f"run {done['id']}: {done['status']}" + (" (cancel requested)" if done.get("cancel_requested")
                                                                 and done["status"] not in FINAL_RUN else ""))
    return 0


@click.command("logs")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until the run ends")
@client_command
def logs(s: Session, run_id: str | None, follow: bool) -> int:
    """A run's log lines (the latest run without RUN)."""
    found = s.run(run_id)
    if follow:
        final = _follow(s, found)
        if not s.out.as_json:
            s.out.say(f"run {final['id']}: {final['status']}")
        return 0
    lines: list[dict[str, Any]] = list(_log_pages(s, found))
    if s.out.as_json:
        s.out.json({"items": lines})
    else:
        for line in lines:
            _log_line(s.out, line)
    return 0


def _log_pages(s: Session, found: dict[str, Any]) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        page = s.api.get(f"/agents/{found['agent_id']}/runs/{found['id']}/logs",
                         params={"after_seq": after, "limit": 500})
        yield from page["items"]
        if page.get("next_after_seq") is None or not page["items"]:
            return
        after = int(page["next_after_seq"])


@click.command("report")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--output", "-o", default=None, help="where to save the HTML (default: the user cache folder)")
@click.option("--open", "open_it", is_flag=True, help="open it in the web browser")
@client_command
def report(s: Session, run_id: str | None, output: str | None, open_it: bool) -> int:
    """Save a run's report as an HTML page (the latest run without RUN) and open it."""
    found = s.run(run_id)
    try:
        resp = s.api.request("GET", f"/agents/{found['agent_id']}/runs/{found['id']}/report",
                             headers={"Accept": "text/html"})
    except ApiError as exc:
        if exc.status in (404, 405) and exc.message.startswith("no operation"):
            exc.hint = ("this platform serves no run reports (it is older than this CLI); "
                        "marketplace runs show prints the outputs")
        raise
    path = Path(output) if output else (Path(platformdirs.user_cache_dir("marketplace", appauthor=False))
                                        / "reports" / f"{found['id']}.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(resp.content)
    opened = webbrowser.open(path.resolve().as_uri()) if open_it else False
    if s.out.as_json:
        s.out.json({"run_id": found["id"], "status": found["status"], "path": str(path), "bytes": len(resp.content),
                    "opened": opened})
    else:
        s.out.success(f"report of run {found['id']} saved to {path}")
        if open_it and not opened:
            s.out.say(f"no web browser found: open {path.resolve().as_uri()}")
    return 0


CLIENT_COMMANDS: list[click.Command] = [login, orgs, agents, install, deployments, run, runs, logs, report]
