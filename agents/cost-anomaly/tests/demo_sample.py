"""Build the built-in agent's demo billing export, ``cost_anomaly/data/demo_focus.csv``.

The demo is what a new user's first run reads when the deployment names no ``billing_source``: a
month of FOCUS 1.0 billing derived from the FinOps Foundation sample (every row starts as a copy of
a real sample row; ``focus_gen.py``) with four realistic anomalies a FinOps engineer would want to
hear about, documented in ``cost_anomaly/data/demo_anomalies.json``:

- a **step change**: the costliest resource (an Azure MySQL server) costs 1.8x from 22 September on
  (a resize nobody reverted);
- a **spike**: Amazon CloudWatch costs 15x on 12 September for one day (a debug log level left on);
- a **new service**: EC2 instances appear in an account that never ran any, from 19 September,
  at about $150 a day;
- an **idle resource**: an EC2 instance records no usage from 8 September on while it keeps being
  billed (a recommendation to stop it, not a cost anomaly: its cost did not change).

Deterministic: ``python agents/cost-anomaly/tests/demo_sample.py`` rewrites both files byte for byte;
``--clean OUT`` writes the same month without the injected changes (the control the agent must find
nothing in). The agent's tests check both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "cost_anomaly" / "data"
DEMO_CSV = DATA / "demo_focus.csv"
DEMO_TRUTH = DATA / "demo_anomalies.json"
ROWS = 1500
SEED = 19
HOURS_PER_DAY = 1
WEEKEND_FACTOR = 0.8
#: What each injected change is, for the documented ground truth (the generator's kind -> the agent's).
FINDINGS = {
    "step": ("anomaly", "step_change"),
    "spike": ("anomaly", "spike"),
    "new_service": ("anomaly", "new_service"),
    "idle": ("recommendation", "idle_resource"),
}
STORIES = {
    "step": "a resize nobody reverted: the server costs 1.8x from this day on",
    "spike": "a debug log level left on for a day: 15x the usual cost",
    "new_service": "instances started in an account that never ran any, about $150 a day",
    "idle": "no recorded usage from this day on while the resource is still billed",
}


def _generator() -> ModuleType:
    module = sys.modules.get("focus_gen")
    if module is not None:
        return module
    path = Path(__file__).with_name("focus_gen.py")
    spec = importlib.util.spec_from_file_location("focus_gen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["focus_gen"] = module
    spec.loader.exec_module(module)
    return module


def injections() -> list[Any]:
    injection = _generator().Injection
    return [
        injection("step", date(2024, 9, 22), factor=1.8),
        injection("spike", date(2024, 9, 12), factor=15.0),
        injection("new_service", date(2024, 9, 19), daily_cost_usd=150.0),
        injection("idle", date(2024, 9, 8)),
    ]


def build(out: Path, *, clean: bool = False) -> list[dict[str, object]]:
    """Write the demo (or its clean copy) to ``out``; returns the documented findings."""
    result = _generator().generate(
        out, ROWS, seed=SEED, hours_per_day=HOURS_PER_DAY, weekend_factor=WEEKEND_FACTOR,
        injections=injections(), clean=clean,
    )
    findings: list[dict[str, object]] = []
    for item in result.injected:
        found_as, kind = FINDINGS[item.kind]
        findings.append({
            "found_as": found_as, "kind": kind, "provider": item.provider, "billing_account": item.billing_account,
            "sub_account": item.sub_account, "service": item.service, "resource_id": item.resource_id,
            "start_day": item.start_day.isoformat(), "end_day": item.end_day.isoformat(),
            "story": STORIES[item.kind],
        })
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clean", metavar="OUT", help="write the clean copy here instead of the demo")
    args = parser.parse_args(argv)
    if args.clean:
        build(Path(args.clean), clean=True)
        return 0
    findings = build(DEMO_CSV)
    DEMO_TRUTH.write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
