"""The `tnncompress` command: verb subcommands over the library, one module per verb."""

from __future__ import annotations

from typing import Annotated

import typer

from . import batch_cmd, env_cmd, eval_cmd, inspect_cmd, report_cmd, run_cmd, spectrum_cmd

app = typer.Typer(
    name="tnncompress",
    help="Compress pretrained PyTorch CNNs into tensorial neural networks.\n\n"
         "Exit codes: 0 success, 1 run-time failure, 2 usage error (bad option value, missing file), "
         "3 an export that does not reproduce the model, 4 a gate missed (outputs written), "
         "130 interrupted (143 SIGTERM, 129 SIGHUP).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from tnncompress.env import versions

        typer.echo(" ".join(f"{k} {v}" for k, v in versions().items()))
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print versions and exit.")] = None) -> None:
    """Compress pretrained PyTorch CNNs into tensorial neural networks."""


app.command("run", epilog=run_cmd.EXAMPLES)(run_cmd.run)
app.command("batch", epilog=batch_cmd.EXAMPLES)(batch_cmd.batch)
app.command("inspect", epilog=inspect_cmd.EXAMPLES)(inspect_cmd.inspect)
app.command("eval", epilog=eval_cmd.EXAMPLES)(eval_cmd.evaluate)
app.command("spectrum", epilog=spectrum_cmd.EXAMPLES)(spectrum_cmd.spectrum)
app.command("report", epilog=report_cmd.EXAMPLES)(report_cmd.report)
app.command("env", epilog=env_cmd.EXAMPLES)(env_cmd.env)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
