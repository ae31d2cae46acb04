"""Write docs/cli.md, the CLI reference, from the command tree the app builds.

Walks ``typer.main.get_command(app)``: every command with its usage, help, arguments
and options (help text and defaults). tests/test_docs.py fails when docs/cli.md is out
of date. Run: .venv/bin/python scripts/gen_cli_reference.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer

from cloudput import config
from cloudput.cli.app import app

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "cli.md"
PROG = "cloudput"
REGENERATE = ".venv/bin/python scripts/gen_cli_reference.py"
#: Options whose value carries no information worth a column (typer's flag markers).
_NO_VALUE = ("", "<bool>")
_MIB = 1024 * 1024
#: Settings whose defaults are byte counts and seconds (shown as 8MiB, 60s).
_SIZE_SETTINGS = ("part_size", "multipart_threshold", "bwlimit")
_SECONDS_SETTINGS = ("timeout", "retry_base_delay", "max_duration")
#: Options read from a variable but not settings of the config file.
_VARIABLE_ONLY = {"config": "CLOUDPUT_CONFIG", "tenant": "CLOUDPUT_TENANT"}


def root_command() -> Any:
    """The click group typer builds from the app (typer's vendored click objects)."""
    return typer.main.get_command(app)


def context_for(command: Any, name: str, parent: Any = None) -> Any:
    """A click context for ``command``, made with the class typer itself uses."""
    return command.context_class(command, info_name=name, parent=parent)


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def help_paragraphs(text: str | None) -> list[str]:
    """A docstring's paragraphs, each on one line (click's ``\\b`` markers dropped)."""
    paragraphs = []
    for block in (text or "").strip().split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip() != "\b"]
        if lines:
            paragraphs.append(" ".join(lines))
    return paragraphs


def option_key(param: Any) -> tuple[tuple[str, ...], str]:
    """What makes two commands' options the same option."""
    return tuple(param.opts + param.secondary_opts), param.help or ""


def shared_options(commands: Iterable[Any]) -> set[tuple[tuple[str, ...], str]]:
    """The options every command takes, identical in name and help."""
    sets = [
        {option_key(p) for p in command.params if p.param_type_name == "option"}
        for command in commands
    ]
    return set.intersection(*sets) if sets else set()


def argument_name(param: Any) -> str:
    """SOURCE, UPLOAD_ID... : the metavar, or the name in capitals."""
    name = param.metavar or param.name.upper()
    if param.nargs == -1 and "..." not in name:
        name += "..."
    return name


def usage(path: str, command: Any) -> str:
    """``cloudput CMD [OPTIONS] ARG...`` with optional arguments in brackets."""
    pieces = [path, "[OPTIONS]"]
    for param in command.params:
        if param.param_type_name != "argument":
            continue
        name = argument_name(param)
        pieces.append(name if param.required else f"[{name}]")
    return " ".join(pieces)


def value_of(param: Any, ctx: Any) -> str:
    """The value placeholder --help shows for an option (empty for a flag)."""
    record = param.get_help_record(ctx)
    if record is None:
        return ""
    shown = record[0]
    for name in param.opts + param.secondary_opts:
        shown = shown.replace(name, "")
    shown = shown.replace(",", "").strip()
    return "" if shown in _NO_VALUE else shown


def setting_of(param: Any) -> str | None:
    """The config key an option sets (same name in cloudput.config.SETTINGS), if any."""
    return param.name if param.name in config.SETTINGS else None


def shown_default(key: str) -> str:
    """A built-in default of cloudput.config.DEFAULTS as a user writes it."""
    value = config.DEFAULTS[key]
    if key in _SIZE_SETTINGS and value % _MIB == 0:
        return f"{value // _MIB}MiB"
    if key in _SECONDS_SETTINGS:
        return f"{value:g}s"
    return str(value)


def default_of(param: Any) -> str:
    """The option's default: the parser's, else the setting's built-in one."""
    default = param.default
    key = setting_of(param)
    if default in (None, False, (), []) or getattr(param, "count", False):
        if key is not None and key in config.DEFAULTS:
            return f"`{shown_default(key)}`"
        return ""
    return f"`{default}`"


def setting_cell(param: Any) -> str:
    """Where else the setting may come from: CLOUDPUT_* and the config file key."""
    key = setting_of(param)
    if key is None:
        variable = _VARIABLE_ONLY.get(param.name)
        return f"`{variable}`" if variable else ""
    return f"`CLOUDPUT_{key.upper()}`, `{key}`"


def option_rows(params: Sequence[Any], ctx: Any) -> list[str]:
    rows = [
        "| option | value | default | variable, config key | help |",
        "| --- | --- | --- | --- | --- |",
    ]
    for param in params:
        names = ", ".join(f"`{n}`" for n in sorted(param.opts + param.secondary_opts))
        value = value_of(param, ctx)
        value_cell = f"`{value}`" if value else "flag"
        if param.multiple or getattr(param, "count", False):
            value_cell += " (repeatable)"
        help_text = cell(param.help or "")
        if param.required:
            help_text = f"**required**. {help_text}"
        rows.append(
            f"| {names} | {value_cell} | {default_of(param)} | {setting_cell(param)} "
            f"| {help_text} |"
        )
    return rows


def argument_rows(params: Sequence[Any]) -> list[str]:
    rows = ["| argument | required | help |", "| --- | --- | --- |"]
    for param in params:
        required = "yes" if param.required else "no"
        rows.append(
            f"| `{argument_name(param)}` | {required} | {cell(param.help or '')} |"
        )
    return rows


def command_section(
    name: str, command: Any, ctx: Any, shared: set[tuple[tuple[str, ...], str]]
) -> list[str]:
    """The section of one subcommand."""
    path = f"{PROG} {name}"
    lines = [f"## {path}", "", "```", usage(path, command), "```", ""]
    for paragraph in help_paragraphs(command.help):
        lines += [paragraph, ""]

    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if arguments:
        lines += ["Arguments:", "", *argument_rows(arguments), ""]

    own = [
        p
        for p in command.params
        if p.param_type_name == "option"
        and option_key(p) not in shared
        and not p.hidden
    ]
    if own:
        lines += ["Options:", "", *option_rows(own, ctx), ""]
    lines += [
        "Also the [options every command takes](#options-every-command-takes) "
        "and `-h`, `--help`.",
        "",
    ]
    return lines


def render() -> str:
    """The whole of docs/cli.md."""
    root = root_command()
    root_ctx = context_for(root, PROG)
    commands = {n: c for n, c in root.commands.items() if not c.hidden}
    contexts = {n: context_for(c, n, root_ctx) for n, c in commands.items()}
    shared = shared_options(commands.values())

    lines = [
        "# CLI reference",
        "",
        "<!-- Generated from the app by scripts/gen_cli_reference.py; do not edit. -->",
        "",
        f"Generated from the command tree (`{REGENERATE}`); tests/test_docs.py fails",
        "when this file is out of date. Examples with real output: "
        "[examples.md](examples.md).",
        "",
        "```",
        f"{PROG} [OPTIONS] COMMAND [ARGS]...",
        "```",
        "",
        *[p + "\n" for p in help_paragraphs(root.help)],
        "Commands:",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for name, command in commands.items():
        summary = help_paragraphs(command.help)[:1] or [""]
        anchor = f"cloudput-{name}"
        lines.append(f"| [`{name}`](#{anchor}) | {cell(summary[0])} |")
    lines += ["", "Options of `cloudput` itself:", ""]
    root_options = [p for p in root.params if not p.hidden]
    lines += [*option_rows(root_options, root_ctx), ""]

    first = next(iter(commands.values()))
    first_ctx = next(iter(contexts.values()))
    shared_params = [
        p
        for p in first.params
        if p.param_type_name == "option" and option_key(p) in shared
    ]
    lines += [
        "## Options every command takes",
        "",
        *option_rows(shared_params, first_ctx),
        "",
    ]
    for name, command in commands.items():
        lines += command_section(name, command, contexts[name], shared)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
