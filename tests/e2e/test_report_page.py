"""A run's report as a web page (issue 19, item 4): the real agent runs on its demo export through a
real worker and the HTTP gateway; the page is read over HTTP and rendered by headless Chromium
(Debian's package, installed by ``support.chromium.ensure_chromium`` if missing) with every other
request refused, light and dark, and the chart's pixels checked in the screenshots."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright
from runs_support import Installed, install_builtin, start_run, thread_worker
from support.chromium import CHROMIUM_ARGS, decode_png, ensure_chromium
from support.wait import wait_until

from cost_anomaly.focus import DEMO_ANOMALIES, DEMO_CSV
from shared.runs.report_page import ANOMALY_COLOUR, SERIES_COLOURS

BACKGROUNDS = {"light": (0xFF, 0xFF, 0xFF), "dark": (0x0F, 0x17, 0x2A)}


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return str(ensure_chromium())
    except RuntimeError as exc:  # never a skip: the report test must run wherever the suite runs
        pytest.fail(str(exc))


@pytest.fixture
def finished(container: Any, make_org: Any, anon: Any, settings: Any, live_url: str) -> tuple[Installed, dict[str, Any]]:
    inst = install_builtin(container, make_org, anon, settings, config={"billing_source": str(DEMO_CSV)},
                           register=False)
    with thread_worker(live_url, inst.key):
        run = start_run(inst.admin, inst, {})
        url = f"/agents/{inst.agent_id}/runs/{run['id']}"
        final = wait_until(lambda: (r := inst.admin.get(url).body)["status"] in {"succeeded", "failed", "dead"} and r,
                           timeout=120, what="the run to finish")
    assert final["status"] == "succeeded", final
    return inst, final


def _count(pixels: list[tuple[int, int, int]], colour: str, tolerance: int = 40) -> int:
    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, want, strict=True)))


def test_the_report_page_renders_offline_with_the_chart_light_and_dark(finished, live_url: str, chromium: str) -> None:
    inst, run = finished
    url = f"{live_url}/agents/{inst.agent_id}/runs/{run['id']}/report"
    resp = httpx.get(url, headers={"Authorization": f"Bearer {inst.admin.token}"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "script-src" not in resp.headers["content-security-policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    html = resp.text
    outputs = run["outputs"]
    # The summary, every explanation, every recommendation with its estimated savings.
    assert "Cost anomaly report" in html and "unexpected spend" in html and "estimated savings" in html
    for anomaly in outputs["anomalies"]:
        assert anomaly["explanation"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in html
    for rec in outputs["recommendations"]:
        assert f"${rec['estimated_monthly_savings_usd']:,.2f}" in html
    documented = json.loads(DEMO_ANOMALIES.read_text(encoding="utf-8"))
    assert html.count('class="marker"') == sum(1 for d in documented if d["found_as"] == "anomaly") == 3
    for ref in ("<script", "src=", "href=", "@import", "url("):
        assert ref not in html, ref  # self-contained: nothing to fetch

    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            for scheme in ("light", "dark"):
                context = browser.new_context(color_scheme=scheme, viewport={"width": 1000, "height": 900},
                                              extra_http_headers={"Authorization": f"Bearer {inst.admin.token}"})
                page = context.new_page()

                def only_the_report(route: Route) -> None:
                    requests.append(route.request.url)
                    if route.request.url == url:
                        route.continue_()
                    else:
                        route.abort()

                page.route("**/*", only_the_report)
                page.goto(url, wait_until="load")
                chart = page.locator("#spend-chart")
                assert chart.is_visible()
                width, height, pixels = decode_png(chart.screenshot(type="png"))
                assert width > 400 and height > 100
                corner = pixels[0]
                assert all(abs(a - b) <= 8 for a, b in zip(corner, BACKGROUNDS[scheme], strict=True)), (scheme, corner)
                # The chart is there: the costliest series' colours and the anomaly markers are drawn.
                series = outputs["daily_spend"]["series"]
                for n, item in enumerate(series[:3]):
                    assert _count(pixels, SERIES_COLOURS[n]) > 50, (scheme, item["service"])
                assert _count(pixels, ANOMALY_COLOUR) > 100, scheme
                background = _count(pixels, "#{:02x}{:02x}{:02x}".format(*BACKGROUNDS[scheme]), tolerance=4)
                assert background < len(pixels) * 0.97  # far from an empty box
                body = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert body == "rgb({}, {}, {})".format(*BACKGROUNDS[scheme])
                context.close()
        finally:
            browser.close()
    assert set(requests) == {url}, requests  # nothing but the page itself was requested


def test_other_orgs_and_unknown_runs_get_no_report(finished, make_org: Any) -> None:
    inst, run = finished
    stranger, _ = make_org()
    assert stranger.get(f"/agents/{inst.agent_id}/runs/{run['id']}/report").status == 404
    assert inst.admin.get(f"/agents/{inst.agent_id}/runs/run_doesnotexist0000/report").status == 404
