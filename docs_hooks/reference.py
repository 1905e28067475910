"""The docs site's generated reference pages: the config reference from the schemas and the CLI reference
from the argument parsers of every command in ``ner_toolkit.cli.COMMANDS``.

mkdocs loads this file as a hook (``hooks:`` in mkdocs.yml): ``on_files`` adds the two pages to the build
as generated files, so a new config key, command or option appears on the site with no edit to the docs.
tests/test_docs_blocks.py renders both pages without mkdocs and checks that every key and option is there.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # document the checkout the site is built from, not an installed copy
    sys.path.insert(0, str(ROOT))

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"


def _cell(text: str) -> str:
    """Plain text made safe for one Markdown table cell (pipes, HTML-looking words such as <unk>, emphasis)."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("*", "\\*").replace("\n", " "))


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# --- config reference -------------------------------------------------------------------------------------

def config_leaves(schema: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Every leaf key of a schema as (dotted key, its field, its default), in declaration order."""
    defaults = schema()
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, getattr(defaults, f.name)


def _config_section(schema: type, title: str, intro: str) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    hints = typing.get_type_hints(schema)
    sections: list[tuple[str, str, type]] = [("", "top-level keys", schema)]
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            sections.append((f"{f.name}.", f.metadata["help"], hints[f.name]))
    for prefix, help_text, section in sections:
        rows = list(config_leaves(section, prefix)) if prefix else [
            (name, f, d) for name, f, d in config_leaves(schema) if "." not in name]
        if not rows:
            continue
        heading = f"`{prefix.rstrip('.')}`: {help_text}" if prefix else "Top-level keys"
        lines += [f"### {heading}", "", "| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for key, f, default in rows:
            allowed = ""
            if f.metadata.get("choices"):
                allowed = ", ".join(f.metadata["choices"])
            elif f.metadata.get("range") is not None:
                allowed = f.metadata["range"].describe()
            lines.append(f"| `{key}` | `{_cell(_yaml_value(default))}` | {_cell(allowed)} | "
                         f"{_cell(f.metadata['help'])} |")
        lines.append("")
    return lines


def config_markdown() -> str:
    """The config reference page: every key of the experiment and the pretraining schemas."""
    from ner_toolkit.config import Config
    from ner_toolkit.pretraining.config import PretrainConfig

    lines = ["# Config reference", "",
             "Generated from the schemas (`ner_toolkit/config.py`, `ner_toolkit/pretraining/config.py`) when the",
             "site is built: every key, its default, the values it allows and what it means. A config file needs",
             "only the keys it changes; `--set KEY=VALUE` (the value parsed as YAML) overrides any key from the",
             "command line. A typo in a key is an error naming its line and the closest valid key.",
             "The same lists as commented YAML: `python -m ner_toolkit.config` (`configs/reference.yaml`) and",
             "`python -m ner_toolkit.pretraining.config` (`configs/pretrain_reference.yaml`).", ""]
    lines += _config_section(Config, "Experiment config (`ner train`)",
                             "What `ner train --config FILE.yaml` (and `ner_toolkit.train(...)`) reads.")
    lines += _config_section(PretrainConfig, "Pretraining config (`ner pretrain train`)",
                             "What `ner pretrain train --config FILE.yaml` reads.")
    return "\n".join(lines) + "\n"


# --- CLI reference ----------------------------------------------------------------------------------------

class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of ``ner NAME``, exactly as the command builds it: its ``run`` is called and
    stopped at its ``parse_args``, so no command needs to expose its parser for the docs."""
    from ner_toolkit.cli import COMMANDS

    module = COMMANDS[name].load()
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        module.run(["--help"], prog=f"ner {name}")
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"ner {name}: its run() returned without parsing its arguments")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, sub) for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()]


def _help(action: argparse.Action, prog: str) -> str:
    """The option's help with argparse's %(default)s / %(choices)s filled in, as ``--help`` prints it."""
    if not action.help or action.help is argparse.SUPPRESS:
        return ""
    params = {k: v for k, v in dict(vars(action), prog=prog).items() if v is not argparse.SUPPRESS}
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return action.help % params


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return " | ".join(map(str, action.choices))
    return action.metavar if isinstance(action.metavar, str) else action.dest.upper()


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string and positional name a parser (and its sub-commands) accepts, ``--help`` aside."""
    names = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names += list(action.option_strings) or [action.metavar if isinstance(action.metavar, str) else action.dest]
    for _, sub in _subcommands(parser):
        names += parser_options(sub)
    return names


def _parser_lines(parser: argparse.ArgumentParser, level: str, title: str, summary: str) -> list[str]:
    lines = [f"{level} `{title}`", ""]
    text = parser.description or (summary[0].upper() + summary[1:] + "." if summary else "")
    if text:
        lines += [text, ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    if rows:
        lines += ["| argument | value | default | meaning |", "| --- | --- | --- | --- |"]
        for action in rows:
            names = ", ".join(f"`{n}`" for n in action.option_strings) or f"`{_value(action)}`"
            value = "" if not action.option_strings else _cell(_value(action))
            default = action.default
            shown = ("" if default in (None, False, [], argparse.SUPPRESS) or action.required
                     else f"`{_cell(str(default))}`")
            required = "required; " if action.required and action.option_strings else ""
            lines.append(f"| {names} | {value} | {shown} | {required}{_cell(_help(action, parser.prog))} |")
        lines.append("")
    for name, sub in _subcommands(parser):
        lines += _parser_lines(sub, level + "#", sub.prog, sub.description or "")
    return lines


def cli_markdown() -> str:
    """The CLI reference page: one section per command of ``COMMANDS``, read from its own parser."""
    from ner_toolkit.cli import COMMANDS

    lines = ["# CLI reference", "",
             "Generated from the argument parsers of the commands in `ner_toolkit/cli/__init__.py`'s `COMMANDS`",
             "table when the site is built. One command, `ner`, with a sub-command per task (also",
             "`python -m ner_toolkit ...`); `ner COMMAND --help` prints the same. The scripts `ner-train`,",
             "`ner-predict`, `ner-evaluate`, `ner-serve`, `ner-export`, `ner-select`, `ner-pretrain` and, in a",
             "checkout, `python train.py` / `python predict.py` are the same commands under older names.", "",
             "Exit codes: 0 success; 2 a user error (one line `error: PATH[:LINE]: ...` on stderr, no traceback,",
             "no partial output); 1 only for a bug. A missing optional extra is one line naming it.", "",
             "| command | what it does |", "| --- | --- |"]
    lines += [f"| [`ner {c.name}`](#ner-{c.name}) | {_cell(c.help)} |" for c in COMMANDS.values()]
    lines.append("")
    for command in COMMANDS.values():
        lines += _parser_lines(command_parser(command.name), "##", f"ner {command.name}", command.help)
    return "\n".join(lines) + "\n"


PAGES: dict[str, Callable[[], str]] = {CONFIG_PAGE: config_markdown, CLI_PAGE: cli_markdown}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated reference pages to the site's files (before the nav is built)."""
    from mkdocs.structure.files import File

    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files
