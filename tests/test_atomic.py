"""Atomic writes: a failed write never leaves a partial or stray file behind."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ner_toolkit.atomic import atomic_directory, atomic_write
from ner_toolkit.errors import UserError


class Boom(Exception):
    pass


def test_text_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_write(path) as handle:
        handle.write("nouveau\n")
    assert path.read_text(encoding="utf-8") == "nouveau\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_binary_write(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    with atomic_write(path, "wb", encoding="utf-8") as handle:
        handle.write(b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"


def test_temp_file_is_a_hidden_sibling(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_write(path):
        [tmp] = os.listdir(tmp_path)
        assert tmp.startswith(".out.txt.tmp")
        assert not path.exists()  # nothing at the target until the write succeeds


def test_exception_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with pytest.raises(Boom):
        with atomic_write(path) as handle:
            handle.write("partial")
            raise Boom
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("complete: true\n")
    with pytest.raises(Boom):
        with atomic_write(path) as handle:
            handle.write("trunc")
            raise Boom
    assert path.read_text() == "complete: true\n"
    assert os.listdir(tmp_path) == ["model.yaml"]


def test_new_file_honours_umask_and_replacement_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    old_mask = os.umask(0o022)
    try:
        with atomic_write(path) as handle:
            handle.write("x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o600)
        with atomic_write(path) as handle:
            handle.write("y")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_mask)


def test_missing_directory_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "out.txt"
    with pytest.raises(UserError) as info:
        with atomic_write(path) as handle:
            handle.write("x")
    assert "does not exist" in info.value.message and "choose a writable path" in info.value.message
    assert info.value.path == str(path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_a_user_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError) as info:
            with atomic_write(locked / "out.txt") as handle:
                handle.write("x")
        assert "not writable" in info.value.message
    finally:
        locked.chmod(0o700)


def test_permission_denied_is_a_user_error_even_for_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("ner_toolkit.atomic._create_file", denied)
    with pytest.raises(UserError) as info:
        with atomic_write(tmp_path / "out.txt"):
            pass
    assert str(info.value) == (
        f"error: {tmp_path / 'out.txt'}: cannot write: directory {tmp_path} is not writable; choose a writable path"
    )


def test_parent_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as info:
        with atomic_write(tmp_path / "file" / "out.txt"):
            pass
    assert "is not a directory" in info.value.message


def test_target_that_is_a_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        with atomic_write(tmp_path) as handle:
            handle.write("x")


def test_unsupported_mode_is_a_bug() -> None:
    with pytest.raises(ValueError):
        with atomic_write("x", "a"):
            pass


def test_directory_is_created_complete(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "model"
    with atomic_directory(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".model.tmp")
        (staging / "config.yaml").write_text("a: 1\n")
        assert not target.exists()
    assert (target / "config.yaml").read_text() == "a: 1\n"
    assert os.listdir(target.parent) == ["model"]


def test_directory_replaces_an_existing_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "fresh.bin").write_text("new")
        assert (target / "stale.bin").exists()  # the old model stays usable until the new one is complete
    assert os.listdir(target) == ["fresh.bin"]
    assert os.listdir(tmp_path) == ["model"]


def test_failed_directory_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("good")
    with pytest.raises(Boom):
        with atomic_directory(target) as staging:
            (staging / "weights").write_text("half")
            raise Boom
    assert (target / "weights").read_text() == "good"
    assert os.listdir(tmp_path) == ["model"]


def test_directory_over_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a directory")
    with pytest.raises(UserError):
        with atomic_directory(target):
            pass
