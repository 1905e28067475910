"""bf16 on a CPU that only emulates it: detected from /proc/cpuinfo and noted once, never refused."""
from pathlib import Path

import pytest
import torch

from ner_toolkit.errors import UserError, one_line_logging
from ner_toolkit.model import precision

X86_NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes bf16 i8mm\n\n"
ARM_NO_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def use(text):
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        monkeypatch.setattr(precision, "_noted", False)
        precision.cpu_native_bf16.cache_clear()
    yield use
    precision.cpu_native_bf16.cache_clear()


@pytest.mark.parametrize("text, native", [(X86_NO_BF16, False), (X86_BF16, True), (ARM_BF16, True),
                                          (ARM_NO_BF16, False), ("processor\t: 0\n", None), (None, None)])
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, text, native):
    cpuinfo(text)
    assert precision.cpu_native_bf16() is native


def test_emulated_bf16_is_noted_once_and_still_allowed(cpuinfo, capsys):
    cpuinfo(X86_NO_BF16)
    cpu = torch.device("cpu")
    with one_line_logging():  # the commands' stderr (a library user's logging decides for itself)
        precision.check_precision("bf16", cpu)
        precision.check_precision("bf16", cpu, "--precision")
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: training.precision bf16 on a CPU without AVX512-BF16/AMX (or the ARM BF16 extension) "
                   "is emulated and usually slower than fp32"]


@pytest.mark.parametrize("text, asked", [(X86_BF16, "bf16"), (None, "bf16"), (X86_NO_BF16, "fp32")])
def test_no_note_where_bf16_is_native_unknown_or_not_asked(cpuinfo, capsys, text, asked):
    cpuinfo(text)
    with one_line_logging():
        precision.check_precision(asked, torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_fp16_on_cpu_is_refused_naming_the_key(cpuinfo):
    cpuinfo(X86_BF16)
    with pytest.raises(UserError, match="fp16 needs a CUDA device") as raised:
        precision.check_precision("fp16", torch.device("cpu"), "--precision")
    assert str(raised.value) == "error: --precision: fp16 needs a CUDA device (loss scaling); use bf16 on CPU"


def test_an_unknown_precision_from_a_python_caller_is_refused():
    # Config values and CLI options are checked by the schema and argparse; a Predictor.load(precision=...)
    # argument reaches check_precision unchecked and must not silently run in fp32.
    with pytest.raises(UserError) as raised:
        precision.check_precision("fp8", torch.device("cpu"), "--precision")
    assert str(raised.value) == "error: --precision: precision must be one of fp32, bf16, fp16, got 'fp8'"
