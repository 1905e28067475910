"""The compiled CPU Viterbi (model/crf/native.py): the same paths and scores as the PyTorch one, built
where a C compiler exists, cached, and a clean fallback where none does."""

import shutil
import warnings

import pytest
import torch
from crf_reference import bioes_constraints, randomise

from ner_toolkit.model.crf import CRF, native
from ner_toolkit.model.crf.viterbi import kbest as torch_kbest
from ner_toolkit.model.crf.viterbi import viterbi as torch_viterbi

COMPILER = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An empty kernel cache and no memoised library; the real one is restored afterwards."""
    monkeypatch.setenv("NER_TOOLKIT_CACHE", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path / "cache"
    native.library.cache_clear()


@pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")
def test_the_kernel_builds_where_a_compiler_exists_and_is_what_decode_uses():
    assert native.library() is not None
    assert native.usable(torch.zeros(1, 1, 1))
    assert not native.usable(torch.zeros(1, 1, 1, dtype=torch.float64))


def _types():
    """37 BIOES tags (9 types, as OntoNotes-sized sets have): the constrained benchmark shape."""
    tags = ["O"] + [f"{p}-T{i}" for i in range(9) for p in "BIES"]
    return tags, bioes_constraints(tags)


@pytest.mark.parametrize("batch,seq_len,num_tags,constrained", [
    (1, 1, 1, False), (5, 1, 4, False), (3, 7, 2, False), (64, 40, 9, False), (40, 60, 37, True),
    (3, 200, 300, False),
])
def test_native_equals_the_torch_implementation(batch, seq_len, num_tags, constrained):
    if native.library() is None:
        pytest.skip("the C Viterbi could not be built here")
    gen = torch.Generator().manual_seed(batch * seq_len + num_tags)
    crf = CRF(num_tags, _types()[1] if constrained else None)
    randomise(crf, gen, scale=2.0)
    emissions = torch.randn(batch, seq_len, num_tags, generator=gen) * 3
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=gen)
    lengths[0] = seq_len
    mask = torch.arange(seq_len) < lengths.unsqueeze(1)
    inputs = crf._inference_inputs(emissions, mask)
    want_paths, want_scores = torch_viterbi(*inputs)
    for threads in (1, 2):  # the batch split across threads changes nothing
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            paths, scores = crf.decode(emissions, mask)
        finally:
            torch.set_num_threads(old)
        assert torch.equal(paths, want_paths)
        assert torch.equal(scores, want_scores)  # the same float32 sums in the same order
        for k in (1, 3, 6):  # k-best: the same ranks, missing ones included, and rank 0 is decode's
            want_k = torch_kbest(*inputs, k, crf._penalties())
            got_k = crf.nbest(emissions, mask, k)
            assert torch.equal(got_k[0], want_k[0]) and torch.equal(got_k[1], want_k[1])
            assert torch.equal(got_k[0][:, 0], paths)


def test_non_contiguous_and_low_precision_emissions():
    if native.library() is None:
        pytest.skip("the C Viterbi could not be built here")
    gen = torch.Generator().manual_seed(3)
    crf = CRF(6)
    randomise(crf, gen)
    emissions = torch.randn(20, 6, 11, generator=gen).transpose(1, 2)  # (B, T, K) view, not contiguous
    mask = torch.arange(11) < torch.randint(1, 12, (20, 1), generator=gen)
    mask[0] = True
    for em in (emissions, emissions.bfloat16()):  # bf16 is decoded in float32
        want = torch_viterbi(*crf._inference_inputs(em, mask))
        got = crf.decode(em, mask)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_failing_build_falls_back_with_one_warning(fresh_build, monkeypatch, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: no working toolchain' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.warns(RuntimeWarning, match="could not build the C Viterbi .*no working toolchain"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None  # memoised: warned once per process
        crf = CRF(4)
        paths, _ = crf.decode(torch.randn(3, 5, 4), torch.ones(3, 5, dtype=torch.bool))  # the torch implementation
    assert paths.shape == (3, 5)
    assert not list(fresh_build.glob("*.so")) and not list(fresh_build.glob("*.tmp*"))  # nothing half-written


def test_turned_off_by_environment(fresh_build, monkeypatch):
    monkeypatch.setenv("NER_TOOLKIT_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None
    assert not native.usable(torch.zeros(1, 1, 1))


@pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")
def test_the_built_library_is_cached_and_reused(fresh_build, monkeypatch, tmp_path):
    assert native.library() is not None
    built = list(fresh_build.glob("viterbi-*.so"))
    assert len(built) == 1
    native.library.cache_clear()
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))  # a new compiler is a new cache key: it would build again ...
    with pytest.warns(RuntimeWarning):
        assert native.library() is None
    native.library.cache_clear()
    monkeypatch.setenv("CC", COMPILER)  # ... the same compiler finds its library and does not build
    from ner_toolkit import native_build

    monkeypatch.setattr(native_build, "_compile", lambda *a: pytest.fail("rebuilt a cached library"))
    assert native.library() is not None


@pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")
def test_an_unwritable_cache_falls_back_with_a_warning(fresh_build, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NER_TOOLKIT_CACHE", str(blocker / "cache"))  # under a regular file: mkdir fails
    with pytest.warns(RuntimeWarning, match="could not build the C Viterbi"):
        assert native.library() is None


def test_the_command_line_reports_a_failed_build_as_one_warning_line(fresh_build, monkeypatch, tmp_path, trained,
                                                                      capsys):
    from ner_toolkit.cli import predict_main

    monkeypatch.setenv("CC", "/bin/false")
    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(trained.model_dir), str(trained.config.parent / "dev.txt"),
                         "--output", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "C Viterbi" in line]
    assert lines == ["warning: could not build the C Viterbi (/bin/false exited with 1): decoding uses the slower "
                     "PyTorch implementation"]
    assert out.read_text(encoding="utf-8").strip()  # predicted with the PyTorch Viterbi
