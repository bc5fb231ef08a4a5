"""The `vdna` command: wires the command groups and maps errors to one line + exit code.

Exit codes: 0 ok, 1 user error (one line on stderr), 2 usage error, 130 interrupted.
Commands whose exit status is a verdict (drift: 0 no drift, 1 drift) exit 2 on every error
instead (`error_exit(2)`), as diff and cmp do. `-v` (or VDNA_DEBUG=1) shows tracebacks.
"""
from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from vdnacli import __version__
from vdnacli.cli import compute, entries, hub, masks, monitor, query, report, settings

app = typer.Typer(
    name="vdna",
    help="Compare image datasets by their Visual DNA: per-neuron activation distributions of a frozen network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
_state = {"verbose": False, "error_exit": 1}


def error_exit(code: int) -> None:
    """The exit status of errors from here on (a verdict command sets 2: its 1 means something)."""
    _state["error_exit"] = code


def _version(value: bool):
    if value:
        print(f"vdna {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug notes.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain output without colour (also NO_COLOR=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
):
    _state["verbose"] = verbose
    if no_color:
        os.environ["NO_COLOR"] = "1"


entries.register(app)
compute.register(app)
query.register(app)
masks.register(app)
hub.register(app)
report.register(app)
monitor.register(app)
settings.register(app)


def _registry_error() -> type[Exception]:
    """registry.RegistryError once the registry is loaded (nothing else raises one); importing it
    up front would load h5py and numpy for `vdna --help` too."""
    errors = sys.modules.get("registry.errors")
    from vdnacli.errors import VdnaError

    return errors.RegistryError if errors is not None else VdnaError


def _command_name() -> str:
    """'vdna add', 'vdna mask learn': the command being run, from the arguments."""
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    groups = {g.name for g in app.registered_groups}
    return " ".join(["vdna"] + words[: 2 if words and words[0] in groups else 1])


def main() -> None:
    from vdnacli.errors import VdnaError

    from vdnacli.env import flag

    debug = flag("VDNA_DEBUG") or any(a in ("-v", "--verbose") for a in sys.argv[1:2])
    try:
        app()
    except (VdnaError, _registry_error()) as e:
        if debug or _state["verbose"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(_state["error_exit"])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as e:  # an optional extra not installed, on a path no command checks up front
        from vdnacli.extras import extra_for, message

        extra = extra_for(e.name)
        if extra is None or debug or _state["verbose"]:
            raise
        print(f"error: {message(_command_name(), extra)} (no module named '{e.name}')", file=sys.stderr)
        sys.exit(_state["error_exit"])
    except Exception as e:  # a bug: still one line unless asked for the traceback
        if debug or _state["verbose"]:
            raise
        print(f"error: internal error {type(e).__name__}: {e} (run with -v for the traceback)", file=sys.stderr)
        sys.exit(_state["error_exit"])
