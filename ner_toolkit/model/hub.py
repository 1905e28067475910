"""``--model org/name[@revision]``: a model directory from the Hugging Face Hub, through the local HF cache.

A name that is not an existing local path and reads as a repo id is looked up in the HF cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read when the lookup runs).
With ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) only the cache is used and nothing touches
the network; otherwise ``huggingface_hub.snapshot_download`` may download the repo (the way
``from_pretrained`` does) and falls back to the cache when the Hub cannot be reached.

The snapshot directory is then an ordinary model directory: every file is checked as for a local one.
Its files are symlinks into the repo's ``blobs/`` folder, which the directory checks accept (a link that
stays inside ``models--org--name/``) while still refusing links that lead anywhere else.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import UserError

__all__ = ["parse_repo_id", "looks_like_repo_id", "cache_dir", "offline", "resolve", "cache_repo_root"]

# owner/name as the Hub spells them (letters, digits, - _ .; no leading/trailing separator, no "--" or ".."),
# then an optional @revision: a branch, a tag or a commit hash (branches may hold "/", e.g. refs/pr/1).
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]{{0,199}}))?")
_TRUE = {"1", "on", "yes", "true"}


def parse_repo_id(name: str) -> Optional[tuple[str, Optional[str]]]:
    """``(repo_id, revision)`` of ``owner/name`` or ``owner/name@revision``; None for anything else."""
    match = _REPO_ID.fullmatch(name)
    if match is None:
        return None
    repo, revision = match.group("repo"), match.group("revision")
    if "--" in repo or ".." in repo or (revision is not None and (".." in revision or revision.endswith("/"))):
        return None
    return repo, revision


def looks_like_repo_id(name: str) -> bool:
    """A name meant as a Hub repo id: the ``owner/name[@revision]`` shape, and not an existing local path."""
    return not os.path.exists(name) and parse_repo_id(name) is not None


def cache_dir() -> Path:
    """The HF hub cache, from the environment as it is now (huggingface_hub reads it once, at import)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.path.expanduser(os.path.expandvars(os.environ[key])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"]))) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def offline() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set now (or when huggingface_hub was imported)."""
    if any((os.environ.get(key) or "").strip().lower() in _TRUE for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return True


def _download_hint(repo_id: str, revision: Optional[str]) -> str:
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def resolve(name: str) -> Path:
    """The cached snapshot directory of Hub repo ``name`` (``owner/name[@revision]``).

    Offline (``HF_HUB_OFFLINE=1``) only the local cache is read; a repo or revision that is not there is a
    ``UserError`` that says how to get it.
    """
    parsed = parse_repo_id(name)
    if parsed is None:
        raise UserError("not a Hugging Face Hub repo id (owner/name or owner/name@revision), and no such local "
                        "directory; pass the directory written by train.py", name)
    repo_id, revision = parsed
    cache = cache_dir()
    is_offline = offline()
    not_cached = (f"model directory not found, and Hub repo {repo_id}"
                  + (f" at revision {revision}" if revision else "")
                  + f" is not in the local HF cache ({cache}); run `{_download_hint(repo_id, revision)}` with "
                    f"network{' (and HF_HUB_OFFLINE unset)' if is_offline else ''}, or pass a local directory")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                            LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:  # pragma: no cover
        raise UserError("huggingface_hub is not installed; pass a local model directory", name) from None
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=is_offline)
    except LocalEntryNotFoundError as exc:
        if type(exc).__name__ == "IncompleteSnapshotError":
            raise UserError(f"the cached snapshot of Hub repo {repo_id} is incomplete; run "
                            f"`{_download_hint(repo_id, revision)}` with network to complete it", name) from None
        raise UserError(not_cached, name) from None
    except GatedRepoError:
        raise UserError(f"Hub repo {repo_id} is gated: accept its terms on the Hub and log in (`hf auth login`), "
                        "or pass a local directory", name) from None
    except RevisionNotFoundError:
        raise UserError(f"Hub repo {repo_id} has no revision {revision!r}; check the name after @", name) from None
    except RepositoryNotFoundError:
        raise UserError(f"model directory not found, and no Hub repo {repo_id} (or it is private: log in with "
                        "`hf auth login`); pass the directory written by train.py", name) from None
    except HFValidationError as exc:
        raise UserError(f"not a valid Hub repo id: {str(exc).splitlines()[0]}", name) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise UserError(f"cannot fetch Hub repo {repo_id}: {(str(exc).splitlines() or [type(exc).__name__])[0]}; "
                        "pass a local directory", name) from None
    return Path(folder)


def cache_repo_root(directory: Path) -> Optional[Path]:
    """``.../models--org--name`` when ``directory`` lies in an HF cache snapshot (``snapshots/<commit>/...``)."""
    directory = Path(os.path.abspath(directory))
    for ancestor in (directory, *directory.parents):
        parent = ancestor.parent
        if parent.name == "snapshots" and parent.parent.name.startswith("models--") and parent != ancestor:
            return parent.parent
    return None
