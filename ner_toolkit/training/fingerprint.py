"""What a run trained from, so ``--resume`` can tell when its inputs changed under it.

A file's fingerprint is its size and the sha256 of its content (streamed in 1 MiB blocks, so a
large vector file costs no memory); a vocabulary's is the sha256 of its token list.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError, warn

_BLOCK = 1 << 20


def file_fingerprint(path: str) -> dict:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


def tokens_fingerprint(tokens: Sequence[str]) -> str:
    # JSON keeps token boundaries unambiguous (a token may hold any character).
    return hashlib.sha256(json.dumps(list(tokens), ensure_ascii=False).encode("utf-8")).hexdigest()


def run_fingerprints(files: dict[str, Optional[str]], vocabularies: dict[str, Optional[Sequence[str]]]) -> dict:
    """``{"files": {key: {size, sha256}}, "vocabularies": {name: sha256}}`` of what is set."""
    return {"files": {key: file_fingerprint(path) for key, path in files.items() if path},
            "vocabularies": {name: tokens_fingerprint(tokens) for name, tokens in vocabularies.items()
                             if tokens is not None}}


def check_fingerprints(saved: Optional[dict], current: dict, checkpoint: Path) -> None:
    """Refuse to resume when a data file or vocabulary differs from what the checkpoint trained on."""
    if not saved:
        warn("this checkpoint predates data fingerprints: cannot verify the data files are unchanged", checkpoint)
        return
    for key, now in current["files"].items():
        then = saved.get("files", {}).get(key)
        if then is None:
            continue  # a file the checkpoint did not use is already a config difference
        if then != now:
            raise UserError(f"{key} changed since the checkpoint (size {then['size']} -> {now['size']}, sha256 "
                            f"{then['sha256'][:12]}.. -> {now['sha256'][:12]}..); restore it or train from scratch "
                            "without --resume", checkpoint)
    for name, now in current["vocabularies"].items():
        then = saved.get("vocabularies", {}).get(name)
        if then is not None and then != now:
            raise UserError(f"the {name} vocabulary changed since the checkpoint; restore the data or train from "
                            "scratch without --resume", checkpoint)
