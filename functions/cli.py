"""``marketplace``: run the platform locally, operate it, and use it.

One ``click`` group; its commands live in modules named for what they hold:

- ``functions/cli_operator.py``: ``up``, ``doctor``, ``token``, ``migrate``, ``rotate-kek``,
  ``openapi``, ``manifest validate`` (the supervisor itself is ``functions/cli_up.py``);
- ``functions/cli_client.py``: ``login``, ``orgs``, ``agents``, ``install``, ``deployments``,
  ``run``, ``runs``, ``logs``, ``report`` (through the API: ``cli_api.py``, ``cli_config.py``,
  ``cli_output.py``);
- ``functions/agent_cli.py``: ``agent init|validate|publish`` (the agent developer kit).

Another feature adds its commands as a ``click.Group`` (or command) in a module of its own and
registers it below with one line, e.g. for ``functions/agent_cli.py``'s ``agent`` group::

    from functions.agent_cli import agent
    cli.add_command(agent)
"""

from __future__ import annotations

import sys

import click

from functions.agent_cli import agent
from functions.cli_client import CLIENT_COMMANDS
from functions.cli_operator import OPERATOR_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--json", "as_json", is_flag=True, help="print JSON (every command also takes --json)")
def cli(as_json: bool) -> None:
    """Agent marketplace platform: run it locally (up), operate it, and use it (login, install, run)."""


for _command in (*OPERATOR_COMMANDS, *CLIENT_COMMANDS):
    cli.add_command(_command)

# Commands of other features: one `cli.add_command(...)` line each, here.
cli.add_command(agent)  # issue 14: the agent developer kit (functions/agent_cli.py)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marketplace`` command: its exit status (usage errors 2, failures 1),
    a one-line message for what went wrong, never a traceback for a known failure."""
    from pydantic import ValidationError  # noqa: PLC0415

    from shared.kernel.adapters.embedded_pg import EmbeddedPostgresError  # noqa: PLC0415

    try:
        result = cli.main(args=argv, prog_name="marketplace", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return int(exc.exit_code)
    except click.ClickException as exc:  # bad arguments: one line, never a usage screen
        print(f"marketplace: {exc.format_message()}", file=sys.stderr)
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except (EmbeddedPostgresError, ValidationError, OSError) as exc:
        print(f"marketplace: {exc}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
