"""The one ``ner`` command: its sub-commands come from one table (cli.COMMANDS), load lazily, share parent
parsers, and the ner-* scripts, train.py and predict.py are aliases of the same commands."""
import ast
import configparser
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ner_toolkit import cli
from ner_toolkit.cli import COMMANDS, Command, command_main, main

from conftest import REPO, assert_user_error, run_cli

CLI_DIR = REPO / "ner_toolkit" / "cli"


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "COLUMNS": "100", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _help(run, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    return out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_is_the_same_through_ner_and_its_alias(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    through_ner = _help(main, [name, "--help"], capsys)
    through_alias = _help(command_main(name), ["--help"], capsys)
    legacy = _help(getattr(cli, f"{name}_main"), ["--help"], capsys)  # what tests and ner-NAME import
    assert through_ner.startswith(f"usage: ner {name} ")
    assert through_alias.startswith(f"usage: ner-{name} ")
    # Same length of prog ("ner train", "ner-train"): the same wrapping, so the same text.
    assert through_ner.replace(f"ner {name}", f"ner-{name}") == through_alias == legacy


def test_pretrain_sub_commands_are_named_under_ner(capsys):
    assert _help(main, ["pretrain", "tokenizer", "--help"], capsys).startswith("usage: ner pretrain tokenizer ")
    assert _help(main, ["pretrain", "train", "--help"], capsys).startswith("usage: ner pretrain train ")


def test_the_table_drives_ner_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = _help(main, ["--help"], capsys)
    for command in COMMANDS.values():  # one line per command, in the table's order
        assert re.search(rf"^\s+{command.name}\s+{re.escape(command.help)}$", text, re.M), text
    positions = [text.index(f"    {name} ") for name in COMMANDS]
    assert positions == sorted(positions)


def test_a_new_command_is_one_module_and_one_row(tmp_path, capsys, monkeypatch):
    (tmp_path / "hello_command.py").write_text(
        "from typing import Optional\n"
        "from ner_toolkit.cli.common import Parser, model_options\n\n"
        "def run(argv: list, prog: Optional[str] = None) -> int:\n"
        "    args = Parser(prog=prog, parents=[model_options()]).parse_args(argv)\n"
        "    print(f'hello {args.model}')\n"
        "    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "hello", Command("hello", "hello_command", "greet a model directory"))
    assert "greet a model directory" in _help(main, ["--help"], capsys)
    assert main(["hello", "--model", "m1"]) == 0
    assert capsys.readouterr().out == "hello m1\n"
    assert cli.hello_main(["--model", "m2"]) == 0  # the alias exists with no more code
    assert capsys.readouterr().out == "hello m2\n"
    # Its errors keep the contract, named by how it was called.
    assert_user_error(main(["hello"]), capsys.readouterr().err, "ner hello:", "--model")
    assert_user_error(cli.hello_main([]), capsys.readouterr().err, "ner-hello:", "--model")


def test_unknown_command_is_one_line_with_the_close_match(capsys):
    assert_user_error(main(["trian", "--config", "x.yaml"]), capsys.readouterr().err,
                      "ner: unknown command 'trian'", "did you mean 'train'?", ", ".join(COMMANDS))
    line = assert_user_error(main(["frobnicate"]), capsys.readouterr().err, "'frobnicate'", "see ner --help")
    assert "did you mean" not in line
    assert_user_error(main([]), capsys.readouterr().err, "ner:", "COMMAND")
    with pytest.raises(AttributeError):
        cli.trian_main  # noqa: B018  (only the table's commands have aliases)
    proc = _python("-m", "ner_toolkit", "evalute", "x.txt")
    assert_user_error(proc.returncode, proc.stderr, "did you mean 'evaluate'?")


def test_ner_help_and_evaluate_import_no_torch(tmp_path):
    scored = tmp_path / "pred.txt"
    scored.write_text("EU B-ORG B-ORG\nrejects O O\nGerman B-MISC B-MISC\n\nPeter B-PER B-PER\nBlackburn I-PER O\n")
    code = ("import sys\nfrom ner_toolkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print('loaded:', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))")
    for argv in (["--help"], ["evaluate", "--help"], ["evaluate", str(scored)]):
        proc = _python("-c", code, *argv)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == "loaded: []", argv


def test_python_m_ner_toolkit_evaluates_a_predicted_file(tmp_path):
    scored = tmp_path / "pred.txt"
    scored.write_text("EU B-ORG B-ORG\nrejects O O\nGerman B-MISC B-MISC\n\nPeter B-PER B-PER\nBlackburn I-PER O\n")
    proc = _python("-m", "ner_toolkit", "evaluate", str(scored), "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^PER\s+0\.00%", proc.stdout, re.M) and re.search(r"^ORG\s+100\.00%", proc.stdout, re.M)
    # The console alias of the same command says the same.
    alias = _python("-c", "from ner_toolkit.cli import evaluate_console; evaluate_console()", str(scored),
                    "--json", "-")
    assert (alias.returncode, alias.stdout) == (0, proc.stdout)
    missing = _python("-m", "ner_toolkit", "evaluate", str(tmp_path / "nope.txt"))
    assert_user_error(missing.returncode, missing.stderr, str(tmp_path / "nope.txt"))


def test_root_scripts_are_aliases():
    for script, name in (("train.py", "train"), ("predict.py", "predict")):
        proc = run_cli(script, ["--help"])
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {script} "), proc.stderr
        assert "--help" in proc.stdout
    proc = run_cli("train.py", ["--no-such-option"])
    assert_user_error(proc.returncode, proc.stderr, "train.py:", "--config")


def test_every_console_script_resolves():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].split("\n") if line)
    assert scripts["ner"] == "ner_toolkit.cli:console"
    assert {f"ner-{name}" for name in COMMANDS} <= set(scripts)
    for target in scripts.values():
        module, attribute = target.split(":")
        assert callable(getattr(importlib.import_module(module), attribute)), target


def _cli_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(CLI_DIR.glob("*.py"))}


def test_command_modules_import_only_the_shared_leaf():
    """Arrows point one way: the table (cli/__init__.py) imports the commands; a command imports
    neither the package nor the guard, and common.py imports no command."""
    commands = {c.module.lstrip(".") for c in COMMANDS.values()}
    for name, source in _cli_sources().items():
        siblings = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                siblings.add(node.module or "")  # "" is the package itself: `from . import x`
        if name[:-3] in commands:
            assert not siblings & {"", "guard"}, (name, siblings)
        if name in ("common.py", "guard.py"):
            assert not siblings, (name, siblings)


def test_choices_and_shared_options_are_written_once():
    sources = _cli_sources()
    for name, source in sources.items():
        assert not re.search(r"choices\s*=\s*[(\[{]", source), f"{name}: a literal choice list; read the owner's"
    for option in ("--model", "--trust-remote-code", "--device", "--batch-size", "--precision", "--compile",
                   "--config", "--set", "--output-dir", "--resume"):
        declared = [name for name, source in sources.items() if f'add_argument("{option}"' in source]
        assert declared == ["common.py"], (option, declared)
    declared = [name for name, source in sources.items() if 'add_argument("--quantize"' in source]
    assert declared == ["common.py", "export.py"]  # export's --quantize is the ONNX graph's, its own choices


def test_choice_lists_are_the_owners_constants(capsys):
    from ner_toolkit import formats
    from ner_toolkit.cli import export, predict, serve
    from ner_toolkit.cli import select as select_command
    from ner_toolkit.data.text import TOKENIZERS
    from ner_toolkit.export.onnx_export import QUANTIZE
    from ner_toolkit.model.modes import PRECISIONS, QUANTIZATIONS
    from ner_toolkit.pretraining.data import CORPUS_FORMATS
    from ner_toolkit.selection import STRATEGIES
    from ner_toolkit.streaming import INPUT_FORMATS

    def choices(module, option):
        return tuple(next(a for a in module._parser()._actions if option in a.option_strings).choices)

    for module in (predict, serve, select_command):
        assert choices(module, "--precision") == PRECISIONS
    for module in (predict, serve):
        assert choices(module, "--quantize") == QUANTIZATIONS
    for module in (predict, select_command):
        assert choices(module, "--format") == formats.names()
    assert choices(export, "--quantize") == QUANTIZE
    assert choices(predict, "--word-tokenizer") == TOKENIZERS
    assert choices(predict, "--input-format") == INPUT_FORMATS
    assert choices(select_command, "--strategy") == STRATEGIES
    assert "{" + ",".join(CORPUS_FORMATS) + "}" in _help(main, ["pretrain", "tokenizer", "--help"], capsys)
