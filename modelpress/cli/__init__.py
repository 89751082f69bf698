"""The ``modelpress`` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok · 1 a gate or verification failed · 2 bad usage or input · 3 an optional backend is unavailable.
Errors are one line on stderr; ``--debug`` shows the traceback.

Commands by family: :mod:`.stages` (prune, distill, export, quantize — one-stage pipelines whose options are
generated from the stage configs by :mod:`.options`), :mod:`.evaluate` (evaluate, explain), :mod:`.reports`
(report, compare), :mod:`.pipeline` (run, demo). Nothing below this package imports click.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from ..errors import ModelpressError
from .common import DEFAULT_OUT, _State

__all__ = ["DEFAULT_OUT", "cli", "entry", "main"]


def _options_from_env() -> None:
    if os.environ.get("MODELPRESS_DEBUG"):
        _State.debug = True


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.version_option(package_name="modelpress")
def cli(debug: bool, quiet: bool) -> None:
    """Make trained PyTorch models smaller and faster, and prove with numbers what it cost.

    \b
    Quick start:
      modelpress demo
      modelpress evaluate zoo:cnn@model.safetensors --data sklearn:digits
    """
    from .. import progress

    _State.debug = _State.debug or debug
    progress.set_quiet(quiet)


# ---- entry point ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 gate failed, 2 bad input, 3 backend unavailable)."""
    _options_from_env()
    args = list(sys.argv[1:] if argv is None else argv)
    _State.debug = _State.debug or "--debug" in args
    import warnings

    from ..artifacts import InputNote
    from ..sources import trusted_code

    _State.notes = []

    def note(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
        if issubclass(category, InputNote):
            _State.notes.append(str(message))  # evaluate copies them into the report
            click.echo(f"note: {message}", err=True)
        else:
            click.echo(warnings.formatwarning(message, category, *rest[:2]).rstrip(), err=True)

    try:
        with trusted_code(), warnings.catch_warnings():  # code trust and notes last one invocation
            warnings.simplefilter("always", InputNote)
            warnings.showwarning = note
            cli.main(args=args, prog_name="modelpress", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted; finished stages are kept, run again to resume", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        return 2
    except ModelpressError as exc:
        if _State.debug:
            traceback.print_exc()
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted; finished stages are kept, run again to resume", err=True)
        return 130
    except Exception as exc:  # the last line of defence: one line, traceback only with --debug
        if _State.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)", err=True)
        return 1
    return 0



def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _add_commands() -> None:
    from . import evaluate, pipeline, reports, search, stages

    for command in (evaluate.evaluate, stages.export, reports.report, pipeline.demo, reports.compare,
                    pipeline.run_command, stages.prune, stages.distill, stages.quantize, evaluate.explain_command,
                    search.search_command):
        cli.add_command(command)


_add_commands()
