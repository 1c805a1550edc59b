"""The `tokbench` command: each subcommand parses its options, calls one function of the layers
below and prints what it returns (bench.present.commands).

torch and Triton are imported only by the commands that measure (`run`, `info`, and `estimate
--validate`), inside them, so every other command starts without them; those commands first
choose how Triton runs (kernels.use_interpreter_without_gpu), before anything imports it.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from bench import BenchError, __version__
from bench.present.commands import catalog, files, kernels, measure, planning
from bench.present.consoles import err

app = typer.Typer(
    help="Benchmark Triton kernels against PyTorch baselines; turn the times into tokens/s.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown joins a docstring's wrapped lines into one paragraph ("rich" keeps the breaks).
    rich_markup_mode="markdown",
)
# In the order `tokbench --help` lists them.
COMMANDS = {
    "info": measure.info,
    "ops": catalog.ops_cmd,
    "kernels": kernels.kernels_cmd,
    "run": measure.run,
    "compare": files.compare_cmd,
    "plot": files.plot_cmd,
    "export": files.export_cmd,
    "models": catalog.models_cmd,
    "estimate": planning.estimate_cmd,
    "step": planning.step_cmd,
    "simulate": planning.simulate_cmd,
    "capacity": planning.capacity_cmd,
    "validate": planning.validate_cmd,
    "report": files.report_cmd,
}
for name, command in COMMANDS.items():
    app.command(name)(command)
# What only the commands that measure import: the light install leaves them out.
MEASURING = ("torch", "triton", "pynvml")


def _version(show: bool) -> None:
    if show:
        typer.echo(f"tokbench {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option("--version", is_eager=True, callback=_version, help="Print the version; exit."),
]


@app.callback()
def _options(version: VersionOpt = False) -> None:
    """The options that come before a command."""


def main() -> None:
    """Entry point: user errors, bad options included, become one line on stderr and exit
    status 2; an interrupted command exits quietly with 130."""
    try:
        code = app(standalone_mode=False)
    except BenchError as e:
        _fail(str(e))
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except ModuleNotFoundError as e:
        if e.name not in MEASURING:
            raise
        _fail(
            f"{e.name} is not installed: this command measures, which the light install "
            "cannot; the default install can (docs/install.md)"
        )
    except Exception as e:
        if not hasattr(e, "format_message"):  # click's usage errors (typer vendors click)
            raise
        message = " ".join(e.format_message().split())
        if type(e).__name__ == "NoArgsIsHelpError" and not message:
            sys.exit(2)  # no command: the help, already printed, is the whole answer
        context = getattr(e, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context else ""
        _fail(message + where)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        sys.exit(0)  # under torchrun every rank meets bad input; rank 0 alone says so (exit 2)
    # One line even when it quotes a file's text: a JSON key may hold a line break (\n, \x85,
    # \u2028…), shown escaped like any other unprintable character.
    one_line = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode() for c in message
    )
    err.print(f"[red]error:[/red] {escape(one_line)}", highlight=False, soft_wrap=True)
    sys.exit(2)
