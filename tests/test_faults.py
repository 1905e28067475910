"""Fault injection: outputs that would destroy inputs, full disks, signals, pipes and odd inputs.

Each class of failure is driven through the real command lines (in-process or as a subprocess) and
checked for the contract: exit 2 with one ``error:`` line naming the path, nothing half-written,
no temporary file left, no input changed.
"""
from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ner_toolkit.cli import evaluate_main, predict_main, train_main

from conftest import REPO, assert_user_error, run_cli


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def temporaries(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if ".tmp" in p.name or ".old" in p.name]


@pytest.fixture()
def model_copy(trained, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(trained.model_dir, target)
    return target


@pytest.fixture()
def conll_input(sample_data, tmp_path) -> Path:
    target = tmp_path / "input.txt"
    shutil.copyfile(sample_data.test, target)
    return target


# --------------------------------------------------------------------------- 1. no output destroys an input

@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_json_onto_the_input_is_refused(model_copy, conll_input, tmp_path, capsys, spelling):
    before = conll_input.read_bytes()
    json_path = {"same": lambda: conll_input,
                 "dotdot": lambda: tmp_path / "sub" / ".." / conll_input.name,
                 "symlink": lambda: _link(tmp_path / "link.json", conll_input, os.symlink),
                 "hardlink": lambda: _link(tmp_path / "hard.json", conll_input, os.link)}[spelling]()
    (tmp_path / "sub").mkdir(exist_ok=True)
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(tmp_path / "pred.txt"),
                       "--evaluate", "--json", str(json_path)])
    assert_user_error(rc, capsys.readouterr().err, "--json would overwrite the input", str(conll_input))
    assert conll_input.read_bytes() == before
    assert not (tmp_path / "pred.txt").exists()


def _link(link: Path, target: Path, how) -> Path:
    how(target, link)
    return link


@pytest.mark.parametrize("name", ["model.safetensors", "labels.json", "new-file.txt"])
def test_output_into_the_model_directory_is_refused(model_copy, conll_input, capsys, name):
    before = snapshot(model_copy)
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(model_copy / name)])
    assert_user_error(rc, capsys.readouterr().err, "--output would", "the model directory", str(model_copy))
    assert snapshot(model_copy) == before


def test_output_directory_holding_the_model_directory_is_refused(model_copy, conll_input, tmp_path, capsys):
    # Several inputs write OUT/NAME: an input named like a model file inside the model directory.
    other = tmp_path / "config.json"
    shutil.copyfile(conll_input, other)
    before = snapshot(model_copy)
    rc = predict_main(["--model", str(model_copy), str(conll_input), str(other), "--output", str(model_copy)])
    assert_user_error(rc, capsys.readouterr().err, "would", str(model_copy))
    assert snapshot(model_copy) == before


def test_hard_linked_output_of_an_input_is_refused(model_copy, conll_input, tmp_path, capsys):
    out = tmp_path / "out.txt"
    os.link(conll_input, out)
    before = conll_input.read_bytes()
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, "would overwrite the input", str(conll_input))
    assert conll_input.read_bytes() == before


def test_evaluate_json_onto_its_file_is_refused(conll_input, capsys):
    before = conll_input.read_bytes()
    rc = evaluate_main([str(conll_input), "--json", str(conll_input)])
    assert_user_error(rc, capsys.readouterr().err, "--json would overwrite")
    assert conll_input.read_bytes() == before


@pytest.mark.parametrize("where", ["data", "config"])
def test_training_output_over_its_inputs_is_refused(tiny_config, sample_data, tmp_path, capsys, where):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    if where == "data":  # the training file lives where the model directory will be swapped in
        train = out / "model" / "train.txt"
        shutil.copyfile(sample_data.train, train)
        args = ["--config", str(tiny_config), "--set", f"data.train={train}"]
        victim = train
    else:  # the config lives in the model directory that training replaces
        config = out / "model" / "config.yaml"
        shutil.copyfile(tiny_config, config)
        args = ["--config", str(config)]
        victim = config
    before = victim.read_bytes()
    rc = train_main([*args, "--output-dir", str(out), "--set", "training.epochs=1"])
    assert_user_error(rc, capsys.readouterr().err, "would replace", str(victim))
    assert victim.read_bytes() == before
    assert sorted(p.name for p in out.rglob("*")) == sorted(["model", victim.name])


def test_config_inside_the_output_directory_is_never_overwritten(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    config = out / "config.yaml"
    text = tiny_config.read_text(encoding="utf-8") + "# my notes\n"
    config.write_text(text, encoding="utf-8")
    rc = train_main(["--config", str(config), "--output-dir", str(out), "--set", "training.epochs=1",
                     "--set", "data.dev=null"])
    assert rc == 0, capsys.readouterr().err
    assert config.read_text(encoding="utf-8") == text
    assert (out / "model" / "config.yaml").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_character_device_output_is_written_through(model_copy, conll_input, tmp_path, capsys):
    # A private null device, not /dev/null itself: a regression must not replace the machine's /dev/null.
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(device)])
    assert rc == 0, capsys.readouterr().err
    assert device.is_char_device()
    assert temporaries(tmp_path) == []


def test_a_fifo_output_is_written_through(model_copy, conll_input, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(fifo)])
    reader.join(timeout=60)
    assert rc == 0, capsys.readouterr().err
    assert fifo.is_fifo()  # not replaced by a regular file
    lines = received[0].decode("utf-8").splitlines()
    assert len(lines) == len(conll_input.read_text(encoding="utf-8").splitlines())


def test_dash_is_stdin_and_stdout(trained, conll_input):
    with conll_input.open("rb") as stdin:
        proc = subprocess.run([sys.executable, str(REPO / "predict.py"), "--model", str(trained.model_dir), "-",
                               "--output", "-"], stdin=stdin, capture_output=True, text=True, timeout=300,
                              env=_env())
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(conll_input.read_text(encoding="utf-8").splitlines())


def test_fifo_input(model_copy, conll_input, tmp_path, capsys):
    fifo = tmp_path / "in.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(conll_input.read_bytes()))
    writer.start()
    out = tmp_path / "out.txt"
    rc = predict_main(["--model", str(model_copy), str(fifo), "--output", str(out)])
    writer.join(timeout=60)
    assert rc == 0, capsys.readouterr().err
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(conll_input.read_text(encoding="utf-8").splitlines())


# --------------------------------------------------------------------------- 2. resource faults

def assert_training_error(rc: int, stderr: str, *needles: str) -> str:
    """Training prints progress lines first; it must still end with one ``error:`` line and no traceback."""
    assert rc == 2, f"exit code {rc}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], stderr
    for needle in needles:
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    return lines[-1]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _limited(script: str, args: list, limit: int) -> subprocess.CompletedProcess:
    """Run ``script`` with a file-size limit: a write past ``limit`` bytes fails with EFBIG, as on a full disk
    (Python ignores SIGXFSZ, so the write raises instead of killing the process)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=_env(), preexec_fn=cap)


def test_full_disk_while_predicting_keeps_the_previous_output(trained, conll_input, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("previous complete predictions\n", encoding="utf-8")
    proc = _limited("predict.py", ["--model", trained.model_dir, conll_input, "--output", out], 2000)
    assert_user_error(proc.returncode, proc.stderr, str(out), "file too large")
    assert out.read_text(encoding="utf-8") == "previous complete predictions\n"
    assert temporaries(tmp_path) == []


def test_full_disk_while_training(tiny_config, tmp_path):
    out = tmp_path / "run"
    # Big enough for config.yaml and metrics.jsonl, too small for a checkpoint or the weights.
    proc = _limited("train.py", ["--config", tiny_config, "--output-dir", out, "--set", "training.epochs=1",
                                 "--set", "data.dev=null"], 60_000)
    line = assert_training_error(proc.returncode, proc.stderr, "file too large", str(out))
    assert "checkpoints" in line or "model" in line
    assert temporaries(out) == []
    assert not list((out / "checkpoints").glob("*.pt")) if (out / "checkpoints").exists() else True
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_wrapped_write_faults_are_user_errors(model_copy, conll_input, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "out.txt"
    out.write_text("kept\n", encoding="utf-8")

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(out)])
    reason = {errno.ENOSPC: "no space left", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied"}[code]
    assert_user_error(rc, capsys.readouterr().err, str(out), reason)
    assert out.read_text(encoding="utf-8") == "kept\n"
    assert temporaries(tmp_path) == []


def test_wrapped_fault_while_saving_the_model(tiny_config, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # save_weights serialises with safetensors.torch.save (then writes the header sorted): a fault there is a
    # fault while the weights are being written.
    monkeypatch.setattr(safetensors.torch, "save", full)
    out = tmp_path / "run"
    rc = train_main(["--config", str(tiny_config), "--output-dir", str(out), "--set", "training.epochs=1",
                     "--set", "data.dev=null"])
    assert_training_error(rc, capsys.readouterr().err, str(out / "model"), "no space left")
    assert not (out / "model").exists()
    assert temporaries(out) == []


def test_stdout_on_a_full_disk(trained, conll_input):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(REPO / "predict.py"), "--model", str(trained.model_dir),
                               str(conll_input)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                              env=_env())
    assert_user_error(proc.returncode, proc.stderr, "no space left")


def test_a_short_report_on_a_full_stdout_names_stdout(tmp_path):
    # A few lines of report fail at print time or at the last flush, never at interpreter exit.
    scored = tmp_path / "scored.txt"
    scored.write_text("EU B-ORG B-ORG\nrejects O O\n", encoding="utf-8")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", "from ner_toolkit.cli import evaluate_console; evaluate_console()",
                               str(scored)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=_env())
    assert_user_error(proc.returncode, proc.stderr, "<stdout>", "no space left")


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_prediction_removes_the_temporary_file(trained, sample_data, tmp_path, sig):
    big = tmp_path / "big.txt"
    big.write_text(sample_data.train.read_text(encoding="utf-8") * 60, encoding="utf-8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    child = subprocess.Popen([sys.executable, str(REPO / "predict.py"), "--model", str(trained.model_dir), str(big),
                              "--output", str(out_dir / "pred.txt")], env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: temporaries(out_dir), 120), "the temporary output never appeared"
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "Traceback" not in err
    assert os.listdir(out_dir) == []


def test_sigterm_during_training_leaves_no_temporary_and_no_lock(tiny_config, tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--config", str(tiny_config), "--output-dir",
                              str(out), "--set", "training.epochs=200", "--set", "data.dev=null"],
                             env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()), 120)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert temporaries(out) == []
    assert not (out / ".lock").exists()


# --------------------------------------------------------------------------- 6. every other input

def test_closed_stdout_pipe_ends_quietly(trained, sample_data):
    proc = subprocess.run(f"'{sys.executable}' '{REPO / 'predict.py'}' --model '{trained.model_dir}' "
                          f"'{sample_data.train}' | head -n 1", shell=True, capture_output=True, text=True,
                          timeout=300, env=_env())
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == "", proc.stderr


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cuda:7", "tpu", "cpu:x"])
def test_devices_this_machine_lacks(model_copy, conll_input, tmp_path, capsys, device):
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(tmp_path / "o.txt"),
                       "--device", device])
    assert_user_error(rc, capsys.readouterr().err, "--device", device)
    assert not (tmp_path / "o.txt").exists()


def test_training_device_this_machine_lacks(tiny_config, tmp_path, capsys):
    rc = train_main(["--config", str(tiny_config), "--output-dir", str(tmp_path / "run"), "--set", "training.device=meta"])
    assert_user_error(rc, capsys.readouterr().err, "training.device", "meta")


@pytest.mark.parametrize("k", ["0", "51", "1000000000", "-3"])
def test_nbest_is_bounded(model_copy, conll_input, tmp_path, capsys, k):
    rc = predict_main(["--model", str(model_copy), str(conll_input), "--output", str(tmp_path / "o.txt"),
                       "--nbest", k])
    assert_user_error(rc, capsys.readouterr().err, "--nbest", "1 to 50")


@pytest.mark.parametrize("text", ["3 5\nthe 0.1 0.2\nrejects 0.3 0.4\nlamb 0.5 0.6\n",
                                  "3 2\nthe 0.1 0.2 0.3 0.4 0.5\nrejects 0.3 0.4 0.1 0.1 0.1\n",
                                  "5 2\nthe 0.1 0.2\nrejects 0.3 0.4\n"],
                         ids=["fewer-values", "more-values", "fewer-rows"])
def test_word2vec_header_that_disagrees_with_its_rows(tiny_config, tmp_path, capsys, text):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text(text, encoding="utf-8")
    rc = train_main(["--config", str(tiny_config), "--output-dir", str(tmp_path / "run"), "--set",
                     f"model.words.vectors={vectors}", "--set", "model.words.dim=2", "--set", "data.dev=null"])
    assert_user_error(rc, capsys.readouterr().err, f"{vectors}:1:", "header")


def test_directory_input_with_a_binary_file_fails_before_any_output(model_copy, sample_data, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copyfile(sample_data.dev, inputs / "a.txt")
    shutil.copyfile(model_copy / "model.safetensors", inputs / "b.bin")
    out = tmp_path / "out"
    rc = predict_main(["--model", str(model_copy), str(inputs), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, str(inputs / "b.bin"), "binary")
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_directory_input_with_an_unreadable_file_fails_before_any_output(model_copy, sample_data, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copyfile(sample_data.dev, inputs / "a.txt")
    shutil.copyfile(sample_data.dev, inputs / "b.txt")
    (inputs / "b.txt").chmod(0)
    out = tmp_path / "out"
    rc = predict_main(["--model", str(model_copy), str(inputs), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, str(inputs / "b.txt"), "permission")
    assert not out.exists()
