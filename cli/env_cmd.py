"""`tnncompress env`: versions and hardware, for bug reports and for reproducing a run."""

from __future__ import annotations

from rich.table import Table

from tnncompress.env import environment

from .common import DebugOpt, JsonOpt, QuietOpt, handle_errors, out, start

EXAMPLES = "Example: [bold]tnncompress env --json[/]"


@handle_errors
def env(json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Show the versions of tnncompress and its dependencies, and the hardware."""
    session = start(json, quiet, 0, debug, 0)
    info = environment()

    def render() -> None:
        table = Table(show_header=False)
        for k, v in info["versions"].items():
            table.add_row(k, v)
        for k, v in info.items():
            if k != "versions":
                table.add_row(k, str(v))
        out.print(table)

    session.result(info, render)
