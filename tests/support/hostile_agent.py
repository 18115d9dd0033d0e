"""A hostile agent project: its one node does what ``inputs["attack"]`` names (tests of the sandbox)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

GRAPH = textwrap.dedent('''
    import os, socket, time

    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict


    class State(TypedDict, total=False):
        outputs: dict


    def _read(path):
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")


    def attack(state, config):
        ctx = config["configurable"]["agent"]
        what, arg = ctx.inputs["attack"], ctx.inputs.get("arg")
        ctx.log("attack", "attacking", what=what)
        if what == "benign":
            result = "ok"
        elif what == "env":
            result = os.environ["MARKETPLACE_DATAPLANE_KEY"]
        elif what == "environ_of":
            result = _read(f"/proc/{arg}/environ")
        elif what == "all_environs":
            found = []
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        found.append(_read(f"/proc/{pid}/environ"))
                    except OSError:
                        pass
            result = "\\n".join(found)
            if "MARKETPLACE_DATAPLANE_KEY" in result:
                raise RuntimeError("found the key")
            raise PermissionError("no environment of another process is readable")
        elif what == "read_file":
            result = _read(arg)
        elif what == "write_file":
            with open(arg, "w") as handle:
                handle.write("owned")
            result = "written"
        elif what == "write_here":
            with open("mine.txt", "w") as handle:
                handle.write("fine")
            result = _read("mine.txt")
        elif what == "socket":
            host, port = arg.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=3).close()
            result = "connected"
        elif what == "memory":
            hog = [bytearray(16 * 1024 * 1024) for _ in range(1024)]
            result = len(hog)
        elif what == "fork_bomb":
            while True:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
        elif what == "sleep":
            time.sleep(float(arg))
            result = "slept"
        elif what == "forge_requests":
            # Find the child's end of the pipe and ask the runner for what the protocol has not.
            import gc
            from runtime.sandbox_child import Channel, RemoteError
            channel = next(o for o in gc.get_objects() if isinstance(o, Channel))
            codes = []
            for op, fields in (("read_the_key", {}), ("put_checkpoint", {"checkpoint_id": "x", "body": 5}),
                               ("decisions", {}), ("tool", {"name": "shell.exec"})):
                try:
                    channel.call(op, **fields)
                    codes.append("granted")
                except RemoteError as exc:
                    codes.append(exc.code)
            result = ",".join(codes)
        elif what == "spin":
            end = time.monotonic() + float(arg)
            while time.monotonic() < end:
                pass
            result = "spun"
        else:
            raise ValueError(what)
        return {"outputs": {"result": result}}


    def build_graph():
        graph = StateGraph(State)
        graph.add_node("attack", attack)
        graph.add_edge(START, "attack")
        graph.add_edge("attack", END)
        return graph
''')


def manifest(*, timeout: int = 30, memory: str = "256Mi", permissions: list[str] | None = None) -> dict[str, Any]:
    """The hostile agent's manifest."""
    return {
        "name": "hostile-agent", "version": "1.0.0", "display_name": "Hostile", "description": "Attacks its sandbox.",
        "category": "other", "publisher": "Tests",
        "runtime": {"framework": "langgraph", "entrypoint": "hostile.graph:build_graph", "timeout_seconds": timeout,
                    "resources": {"cpu": "1", "memory": memory}},
        "inputs": {"type": "object"}, "permissions": permissions or [], "tools": [],
        "pricing": {"base_usd": "0"}, "deployment": ["saas", "byoc"],
    }


def write_project(root: Path, **manifest_options: Any) -> Path:
    """The project in ``root`` (made readable by every user, as the runner's runs need)."""
    (root / "hostile").mkdir(parents=True, exist_ok=True)
    (root / "hostile" / "__init__.py").write_text("", encoding="utf-8")
    (root / "hostile" / "graph.py").write_text(GRAPH, encoding="utf-8")
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest(**manifest_options)), encoding="utf-8")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root
