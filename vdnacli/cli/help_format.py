"""Plain `--help` for every command, the same under every supported Typer.

Typer 0.2x's own rendering shows a value placeholder after flags (`--json <bool>`), `{name}`
for arguments and `<list[str]>` for repeatable options, lets rich markup eat bracketed text
("vdna[plot]" became "vdna"), and keeps the docstrings' line breaks. Here help is written
with the (Typer-provided) Click formatter from the parameters' public attributes only:

  Usage: vdna compare [OPTIONS] A B
  --json            Print JSON on stdout instead of tables.
  --layer LAYER     Only this layer (repeatable).
  -k, --top TOP     How many entries to return.  [default: 5; TOP>=1]

Paragraphs are re-wrapped to the terminal (single line breaks join); a paragraph that starts
with a \\b line keeps its lines. `apply(app)` gives every command and sub-app these classes.
"""
from __future__ import annotations

import inspect
import re

import typer.core

_ESCAPED = re.compile(r"\\([\[\]])")  # rich-markup escapes ("\[@REV]") written for Typer's rich mode


_COMMAND_LINE = re.compile(r"(^|\s)(vdna|torchrun|python) [a-z-]")


def _text(s: str | None) -> str:
    return _ESCAPED.sub(r"\1", inspect.cleandoc(s or ""))


def _paragraphs(s: str | None) -> str:
    """Help text for Click's formatter: prose re-wraps; a paragraph holding command lines
    (examples) keeps its lines as written, so they can be copied."""
    out = []
    for para in _text(s).split("\n\n"):
        if _COMMAND_LINE.search(para) and not para.startswith("\b"):
            para = "\b\n" + para
        out.append(para)
    return "\n\n".join(out)


_BY_TYPE = {"int": "N", "integer": "N", "float": "X", "Path": "PATH", "path": "PATH"}


def _metavar(param) -> str:
    """The parameter's metavar, else N / X / PATH by its type, else its name in capitals."""
    if getattr(param, "metavar", None):
        return param.metavar
    if param.param_type_name == "option":
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)  # Typer >= 0.2x
        kind = getattr(annotation, "__name__", None) or getattr(getattr(param, "type", None), "name", None)
        if kind in _BY_TYPE:
            return _BY_TYPE[kind]
    return (param.name or "value").strip("_").upper().replace("_", "-")


def _is_flag(param) -> bool:
    return bool(getattr(param, "is_flag", False) or getattr(param, "count", False))


def _range(param, label: str) -> str:
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is not None and hi is not None:
        return f"{lo}<={label}<={hi}"
    if lo is not None:
        return f"{label}>={lo}"
    if hi is not None:
        return f"{label}<={hi}"
    return ""


def _default(param) -> str:
    if getattr(param, "show_default", True) is False or _is_flag(param):
        return ""
    d = param.default
    if callable(d) or d is None or d == () or d == [] or type(d).__name__ in ("Sentinel", "DefaultPlaceholder"):
        return ""
    if isinstance(d, (list, tuple)):
        return ", ".join(map(str, d))
    return str(getattr(d, "value", d))


def _record(param) -> tuple[str, str] | None:
    if getattr(param, "hidden", False):
        return None
    extra = []
    if param.param_type_name == "argument":
        label = _metavar(param) + ("..." if param.nargs != 1 else "")
    else:
        opts = sorted(param.opts, key=lambda o: (o.startswith("--"), o))
        label = ", ".join(opts)
        if getattr(param, "secondary_opts", None):
            label += " / " + ", ".join(param.secondary_opts)
        if not _is_flag(param):
            label += " " + _metavar(param)
    default = _default(param)
    if default:
        extra.append(f"default: {default}")
    rng = _range(param, _metavar(param) if param.param_type_name == "option" and not _is_flag(param) else "N")
    if rng:
        extra.append(rng)
    if param.required:
        extra.append("required")
    help_text = " ".join(_text(getattr(param, "help", None)).split())
    if extra:
        help_text = f"{help_text}  [{'; '.join(extra)}]" if help_text else f"[{'; '.join(extra)}]"
    return label, help_text


def _usage_pieces(command, ctx) -> list[str]:
    pieces, has_options = [], False
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = _metavar(param)
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        else:
            has_options = True
    return (["[OPTIONS]"] if has_options else []) + pieces


def _usage(command, ctx, formatter, group: bool) -> None:
    pieces = _usage_pieces(command, ctx) + (["COMMAND [ARGS]..."] if group else [])
    formatter.write_usage(ctx.command_path, " ".join(pieces))


def _format(command, ctx, formatter, subcommands: list | None = None) -> None:
    _usage(command, ctx, formatter, subcommands is not None)
    text = _paragraphs(command.help)
    if text:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(text)
    args = [r for p in command.get_params(ctx) if p.param_type_name == "argument" and (r := _record(p))]
    opts = [r for p in command.get_params(ctx) if p.param_type_name != "argument" and (r := _record(p))]
    for title, rows in (("Arguments", args), ("Options", opts)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)
    if subcommands:
        with formatter.section("Commands"):
            formatter.write_dl(subcommands)
    epilog = _text(getattr(command, "epilog", None))
    if epilog:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(epilog)


def short_help(command) -> str:
    """A command's first paragraph, on one line."""
    first = _text(getattr(command, "short_help", None) or command.help).split("\n\n", 1)[0]
    return " ".join(first.replace("\b", "").split())


class Command(typer.core.TyperCommand):
    def format_usage(self, ctx, formatter) -> None:  # also the usage line of usage errors
        _usage(self, ctx, formatter, False)

    def format_help(self, ctx, formatter) -> None:
        _format(self, ctx, formatter)


class Group(typer.core.TyperGroup):
    def format_usage(self, ctx, formatter) -> None:
        _usage(self, ctx, formatter, True)

    def format_help(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not getattr(cmd, "hidden", False):
                rows.append((name, short_help(cmd)))
        _format(self, ctx, formatter, rows)


def apply(app: typer.Typer) -> None:
    """Every command and sub-app of `app` (recursively) renders its help with these classes."""
    if getattr(app.info, "cls", None) in (None, typer.core.TyperGroup) or _is_default(app.info.cls):
        app.info.cls = Group
    for info in app.registered_commands:
        if info.cls is None or _is_default(info.cls):
            info.cls = Command
    for group in app.registered_groups:
        if group.cls is None or _is_default(group.cls):
            group.cls = Group
        if group.typer_instance is not None:
            apply(group.typer_instance)


def _is_default(cls) -> bool:
    return type(cls).__name__ == "DefaultPlaceholder" or cls in (typer.core.TyperCommand, typer.core.TyperGroup)


def is_usage_error(e: BaseException) -> bool:
    """A Click usage error (bad option, missing argument, unknown command), by its public shape."""
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and getattr(e, "exit_code", None) == 2


def usage_message(e: BaseException) -> str:
    return " ".join(str(e.format_message()).split())


def no_command(e: BaseException) -> bool:
    """`vdna` (or a group) called without a command: Click raises this to show the help."""
    return type(e).__name__ == "NoArgsIsHelpError"


def show_usage_error(e: BaseException) -> None:
    """The usage line and where help is, on stderr, before the one-line error."""
    import sys

    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return
    sys.stderr.write(ctx.get_usage() + "\n")
    sys.stderr.write(f"Try '{ctx.command_path} --help' for help.\n")
