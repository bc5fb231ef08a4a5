"""The `vdna` command: wires the command groups and maps errors to one line + exit code.

Exit codes by class (vdnacli.errors; the table is in docs/cli.md): 0 ok, 1 other user error,
2 usage, 3 not found, 4 incompatible, 5 integrity, 6 network, 130 interrupted. An error is one
line on stderr; with --json it is also one JSON object {"error", "code", "kind"} on stdout.
Commands whose exit status is a verdict (drift: 0 no drift, 1 drift; verify: 1 damaged) exit
at least 2 on every error (`error_exit(2)`), as diff and cmp do. `-v` (or VDNA_DEBUG=1) shows
tracebacks.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, NoReturn

import typer

from vdnacli import __version__
from vdnacli.cli import compute, entries, help_format, hub, interrupt, masks, monitor, query, report, settings
from vdnacli.errors import VdnaError

app = typer.Typer(
    name="vdna",
    help="Compare image datasets by their Visual DNA: per-neuron activation distributions of a frozen network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
_state = {"verbose": False, "error_exit": 1}


def error_exit(code: int) -> None:
    """The least exit status of errors from here on (a verdict command sets 2: its 1 is an answer)."""
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
help_format.apply(app)  # plain help for every command and sub-app (see help_format)


def _registry_error() -> type[Exception]:
    """registry.RegistryError once the registry is loaded (nothing else raises one); importing it
    up front would load h5py and numpy for `vdna --help` too."""
    errors = sys.modules.get("registry.errors")
    return errors.RegistryError if errors is not None else VdnaError


def _command_name(args: list[str]) -> str:
    """'vdna add', 'vdna mask learn': the command being run, from the arguments."""
    words = [a for a in args if not a.startswith("-")]
    groups = {g.name for g in app.registered_groups}
    return " ".join(["vdna"] + words[: 2 if words and words[0] in groups else 1])


def _json_mode(args: list[str]) -> bool:
    """--json among the options (not after `--`): errors are then also printed as JSON on stdout."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _fail(message: str, code: int, kind: str, json_mode: bool) -> int:
    """One line on stderr (and with --json one object on stdout); the exit status."""
    code = max(code, _state["error_exit"])
    if json_mode:
        sys.stdout.write(json.dumps({"error": message, "code": code, "kind": kind}) + "\n")
        sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args: list[str]) -> int:
    """Run the command line `args` and return its exit status: errors are printed (one line;
    a JSON object too with --json), never raised, except with -v / VDNA_DEBUG=1. Ctrl-C, once
    `interrupt.install()` took SIGINT over (main does), ends the process here with 130."""
    from vdnacli.env import flag
    from vdnacli.errors import classify

    _state.update(verbose=False, error_exit=1)
    json_mode = _json_mode(args)
    interrupt.set_json(json_mode)
    debug = flag("VDNA_DEBUG") or any(a in ("-v", "--verbose") for a in args[:1])
    try:
        rv = app(args=args, prog_name="vdna", standalone_mode=False)
    except KeyboardInterrupt:
        if not interrupt.installed():
            raise
        _interrupted()
    except (VdnaError, _registry_error()) as e:
        if interrupt.interrupted():
            _interrupted()
        if debug or _state["verbose"]:
            raise
        code, kind = classify(e)
        return _fail(str(e), code, kind, json_mode)
    except ModuleNotFoundError as e:  # an optional extra not installed, on a path no command checks up front
        from vdnacli.extras import extra_for, message

        extra = extra_for(e.name)
        if extra is None or debug or _state["verbose"]:
            raise
        return _fail(f"{message(_command_name(args), extra)} (no module named '{e.name}')", 1, "error", json_mode)
    except Exception as e:
        if interrupt.interrupted():  # e.g. click's Abort, which older versions make of Ctrl-C
            _interrupted()
        if help_format.no_command(e):  # `vdna` alone: the help, on stderr, status 2 (as Click)
            print(e.ctx.get_help(), file=sys.stderr)
            return 2
        if help_format.is_usage_error(e):
            help_format.show_usage_error(e)
            return _fail(help_format.usage_message(e), 2, "usage", json_mode)
        if type(e).__name__ == "Abort":
            return _fail("aborted", 1, "error", json_mode)
        if debug or _state["verbose"]:
            raise
        # a bug: still one line unless asked for the traceback
        return _fail(f"internal error {type(e).__name__}: {e} (run with -v for the traceback)", 1, "internal",
                     json_mode)
    if interrupt.interrupted():  # typer turns KeyboardInterrupt into exit status 130 on its own
        _interrupted()
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _interrupted() -> NoReturn:
    # The stack has unwound (finally blocks ran, temporary files are gone); interpreter
    # shutdown (torch's, the thread pools') can take seconds more, so it is skipped.
    interrupt.leave()


def main(argv: list[str] | None = None) -> NoReturn:
    interrupt.install()
    sys.exit(run(list(sys.argv[1:] if argv is None else argv)))
