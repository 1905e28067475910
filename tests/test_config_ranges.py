"""Every config value is checked in the schema: ranges, finiteness, YAML alias bombs, and a property test
that ``train.py`` either runs or exits 2 with one line for any value of any key."""
from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
import time
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ner_toolkit.cli import train_main
from ner_toolkit.config import Config, all_keys, from_dict, load_config, reference_yaml
from ner_toolkit.schema import MAX_YAML_NODES, Range
from ner_toolkit.errors import UserError

from conftest import TINY_SCRATCH, assert_user_error


def _field(key: str) -> tuple[Any, dataclasses.Field]:
    """(type hint, dataclass field) of a dotted leaf key."""
    cls: Any = Config
    *sections, name = key.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[name], {f.name: f for f in dataclasses.fields(cls)}[name]


def _inner(tp: Any) -> tuple[Any, bool]:
    """(type without Optional, whether null is allowed)."""
    if typing.get_origin(tp) is Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner, True
    return tp, False


LEAVES = [k for k in all_keys() if not dataclasses.is_dataclass(_field(k)[0])]
NUMERIC = [k for k in LEAVES if _inner(_field(k)[0])[0] in (int, float)]


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _nested_yaml(key: str, value: Any) -> str:
    """A config file setting ``key``, with the leaf on line ``len(parts) + 1`` (after one comment line)."""
    parts = key.split(".")
    lines = ["# out-of-range value below"]
    for depth, part in enumerate(parts[:-1]):
        lines.append("  " * depth + part + ":")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the schema declares every range

@pytest.mark.parametrize("key", NUMERIC)
def test_every_numeric_key_has_a_range_shown_in_the_reference(key):
    allowed = _field(key)[1].metadata.get("range")
    if key in ("data.token_column", "data.label_column"):  # negative counts from the end: any integer
        assert allowed is None
        return
    assert isinstance(allowed, Range), f"{key} has no range in its field metadata"
    leaf = key.rpartition(".")[2]
    assert any(line.strip().startswith(f"{leaf}:") and f"allowed: {allowed.describe()}" in line
               for line in reference_yaml().splitlines()), key


def test_the_shipped_reference_is_the_generated_one():
    assert (Path(__file__).resolve().parents[1] / "configs" / "reference.yaml").read_text(encoding="utf-8") == \
        reference_yaml()


# --------------------------------------------------------------------------- out of range, one per class

OUT_OF_RANGE = [
    ("training.epochs", 0, "from 1 to"),
    ("training.batch_size", 0, "from 1 to"),
    ("training.batch_tokens", 0, "from 1 to"),
    ("training.accumulate", -3, "from 1 to"),
    ("training.eval_batch_size", 0, "from 1 to"),
    ("model.words.dim", 0, "from 1 to 65536"),
    ("model.words.dim", 10**9, "from 1 to 65536"),
    ("model.lstm.hidden_size", 10**12, "from 1 to 65536"),
    ("model.lstm.num_layers", 65, "from 1 to 64"),
    ("model.chars.kernel_size", 0, "from 1 to"),
    ("model.encoder.max_length", 3, "from 4 to"),
    ("model.encoder.stride", -1, "from 0 to"),
    ("model.encoder.context", -1, "from 0 to"),
    ("training.patience", -1, "from 0 to"),
    ("training.checkpoint_every", -1, "from 0 to"),
    ("training.keep_checkpoints", 0, "from 1 to"),
    ("training.num_threads", 0, "from 1 to 4096"),
    ("training.seed", -1, "from 0 to 4294967295"),
    ("training.seed", 2**32, "from 0 to 4294967295"),
    ("training.lr.crf", -0.01, "greater than 0"),
    ("training.lr.encoder", 0, "greater than 0"),
    ("training.lr.lstm", math.nan, "finite"),
    ("training.lr.words", math.inf, "finite"),
    ("training.weight_decay", -math.inf, "finite"),
    ("training.weight_decay", -0.1, "at least 0"),
    ("training.max_grad_norm", -1.0, "at least 0"),
    ("model.dropout", 1.0, "in [0, 1)"),
    ("model.lstm.dropout", -0.1, "in [0, 1)"),
    ("model.encoder.dropout", 1.5, "in [0, 1)"),
    ("model.encoder.token_dropout", 1.0, "in [0, 1)"),
    ("model.words.unk_dropout", math.nan, "finite"),
    ("model.words.max_vectors", 0, "from 1 to"),
    ("training.ema", 1.0, "in [0, 1)"),
    ("training.warmup", 1.0, "in [0, 1)"),
]


@pytest.mark.parametrize("key,value,needle", OUT_OF_RANGE)
def test_out_of_range_in_a_file_names_key_range_file_and_line(tmp_path, key, value, needle):
    path = tmp_path / "exp.yaml"
    path.write_text(_nested_yaml(key, value), encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path)
    err = info.value
    assert (err.path, err.line) == (str(path), len(key.split(".")) + 1)
    assert f"`{key}`" in str(err) and needle in str(err) and "got " in str(err), str(err)


@pytest.mark.parametrize("key,value,needle", OUT_OF_RANGE)
def test_out_of_range_through_set_names_the_override(key, value, needle):
    override = f"{key}={_yaml_value(value)}"
    with pytest.raises(UserError) as info:
        load_config(None, ("training.seed=3", override))
    message = str(info.value)
    assert message.startswith("error: --set:2: "), message
    assert f"`{key}`" in message and needle in message and f"(from --set {override})" in message, message


def test_a_section_set_whole_is_checked_and_named():
    with pytest.raises(UserError) as info:
        load_config(None, ("model.lstm={hidden_size: 0, num_layers: 1}",))
    assert "`model.lstm.hidden_size` must be from 1 to 65536, got 0" in str(info.value)
    assert "--set model.lstm={hidden_size: 0" in str(info.value)


@pytest.mark.parametrize("text", ["1e400", "-1e400", ".inf", ".NaN", str(10**400)])
def test_floats_beyond_range_or_not_numbers_are_refused(text):
    with pytest.raises(UserError) as info:
        load_config(None, (f"training.lr.crf={text}",))
    assert "`training.lr.crf` must be a finite number greater than 0" in str(info.value)


def test_the_string_nan_through_set_is_not_a_number():
    with pytest.raises(UserError) as info:
        load_config(None, ("training.lr.crf=nan",))
    assert "`training.lr.crf` must be a number" in str(info.value)


def test_a_model_directory_config_gets_the_same_checks():
    with pytest.raises(UserError) as info:
        from_dict({"model": {"words": {"dim": 0}}}, "received/config.yaml")
    assert str(info.value).startswith("error: received/config.yaml: `model.words.dim` must be from 1 to 65536")


def test_bounds_themselves_are_allowed():
    config = load_config(None, ("training.seed=4294967295", "training.seed=0", "model.encoder.max_length=4",
                                "model.lstm.num_layers=64", "training.lr.crf=1e-12", "training.ema=0.999999",
                                "training.patience=0", "data.token_column=-5"))
    assert config.training.seed == 0 and config.model.lstm.num_layers == 64 and config.data.token_column == -5


# --------------------------------------------------------------------------- YAML alias recursion and bombs

LOL = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _load_quickly(load: Callable[[], Any], seconds: float = 1.0) -> BaseException:
    """The error ``load()`` raises; a load that does not end within ``seconds`` fails the test (not hangs)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            load()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    start = time.perf_counter()
    thread.start()
    thread.join(5.0)
    elapsed = time.perf_counter() - start
    assert not thread.is_alive(), "the load did not end within 5 s (unbounded expansion)"
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert outcome, "the load succeeded"
    return outcome[0]


@pytest.mark.parametrize("text,line,needle", [
    ("model:\n  encoder:\n    scratch: &s {inner: *s}\n", 3, "recursive alias"),
    ("x: &a [*a]\n", 1, "recursive alias"),
    ("x: &a [1, [2, *a]]\n", 1, "recursive alias"),
    (LOL, 6, f"more than {MAX_YAML_NODES:,} values"),
    ("model:\n  encoder:\n    scratch:\n" + "".join(f"      {k}\n" for k in LOL.splitlines()), 9,
     f"more than {MAX_YAML_NODES:,} values"),
])
def test_alias_recursion_and_bombs_are_refused_fast_with_file_and_line(tmp_path, text, line, needle):
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    err = _load_quickly(lambda: load_config(path))
    assert isinstance(err, UserError), repr(err)
    assert (err.path, err.line) == (str(path), line), str(err)
    assert needle in str(err)


@pytest.mark.parametrize("value", ["&a [*a]", "&a {k: *a}", LOL.replace("\n", ", ").join("{}")])
def test_alias_bombs_through_set_are_refused_fast(value):
    err = _load_quickly(lambda: load_config(None, (f"model.encoder.scratch={value}",)))
    assert isinstance(err, UserError) and "--set model.encoder.scratch" in str(err), repr(err)


def test_deep_nesting_is_a_user_error_not_a_recursion_traceback(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 20000 + "]" * 20000 + "\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert info.value.path == str(path)


def test_aliases_below_the_limit_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model:\n  words: {dim: &d 16}\n  fusion_dim: *d\n", encoding="utf-8")
    assert load_config(path).model.fusion_dim == 16


# --------------------------------------------------------------------------- property: run or one error line

def _in_range(key: str) -> st.SearchStrategy:
    tp, f = _field(key)
    inner, nullable = _inner(tp)
    allowed: Optional[Range] = f.metadata.get("range")
    default = getattr(_defaults(key), key.rpartition(".")[2])
    if f.metadata.get("choices") is not None:
        base = st.sampled_from(f.metadata["choices"])
    elif typing.get_origin(inner) is Literal:
        base = st.sampled_from(typing.get_args(inner))
    elif inner is bool:
        base = st.booleans()
    elif inner is int:
        low = int(allowed.low) if allowed and allowed.low is not None else -2
        # small values only: a legal 65536-wide LSTM is a legal, but slow, run
        base = st.integers(low, low + (1 if key == "training.epochs" else 3))
    elif inner is float:
        top = 0.9 if allowed and allowed.high is not None else 2.0
        bottom = 1e-6 if allowed and allowed.low_open else 0.0
        base = st.floats(bottom, top, allow_nan=False, allow_subnormal=False)  # prepare() flushes denormals
    elif inner is dict:  # the scratch encoder: variations of the tiny one (an empty one is ALBERT-xxlarge)
        base = st.builds(lambda n: {**TINY_SCRATCH, "num_hidden_layers": n}, st.integers(1, 2))
    elif inner is list:
        base = st.lists(st.integers(-3, 2), min_size=1, max_size=3)
    else:
        base = TEXT
    options = [base, st.just(default)]
    if nullable:
        options.append(st.none())
    return st.one_of(options)


def _defaults(key: str) -> Any:
    obj: Any = Config()
    for part in key.split(".")[:-1]:
        obj = getattr(obj, part)
    return obj


def _out_of_range(key: str) -> st.SearchStrategy:
    inner, _ = _inner(_field(key)[0])
    allowed: Optional[Range] = _field(key)[1].metadata.get("range")
    if allowed is None or inner not in (int, float):
        return st.nothing()
    values: list[Any] = [math.nan, math.inf, -math.inf, 10**30, -10**30]
    if allowed.low is not None:
        values.append(allowed.low - (1 if inner is int else 0.5))
    if allowed.high is not None:
        values.append(allowed.high + (1 if inner is int else 0.0))
    return st.sampled_from(values)


# No line or paragraph separators: UserError keeps messages on one line by joining "\n" only (see the note).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=6)
WRONG_TYPES = st.one_of(TEXT, st.lists(st.integers(), max_size=2), st.none(), st.booleans(),
                        st.just(math.nan), st.integers(-10**40, 10**40), st.dictionaries(st.text(max_size=3),
                                                                                      st.integers(), max_size=2))


@st.composite
def key_and_value(draw: Any) -> tuple[str, Any]:
    key = draw(st.sampled_from([k for k in LEAVES if k != "output_dir"]))  # --output-dir always wins
    value = draw(st.one_of(_in_range(key), _out_of_range(key), WRONG_TYPES))
    return key, value


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=key_and_value())
def test_any_value_of_any_key_runs_or_exits_2_with_one_line(tiny_config, capsys, drawn):
    key, value = drawn
    threads = torch.get_num_threads()
    overrides = ["data.dev=null", "training.checkpoint_every=0", "training.progress=false"]
    if key != "training.epochs":
        overrides.append("training.epochs=1")
    overrides.append(f"{key}={_yaml_value(value)}")
    capsys.readouterr()
    with tempfile.TemporaryDirectory() as out:
        try:
            rc = train_main(["--config", str(tiny_config), "--output-dir", str(Path(out) / "run"),
                             *(a for o in overrides for a in ("--set", o))])
        finally:
            torch.set_num_threads(threads)  # a drawn training.num_threads must not leak into other tests
    err = capsys.readouterr().err
    event(f"exit {rc}")  # --hypothesis-show-statistics: how many drawn values trained
    assert rc in (0, 2), f"{key}={value!r}: exit {rc}\n{err}"
    if rc == 2:
        assert_user_error(rc, err)
