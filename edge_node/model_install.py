"""Installing a downloaded model: a staging directory per index, verification, and an atomic swap into the store.

Nothing reaches `<store>/<model_id>` until every file matched the index's size and sha256 and the
manifest agreed with the index; the swap is two renames, and a crash between them is undone on the
next deploy. Raises DeployFailed for anything that does not verify.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edge_node.deploy_errors import DeployFailed
from models.artifact_index import ModelIndex
from models.errors import ManifestError
from models.manifest import MANIFEST_NAME, Manifest, sha256_file

logger = logging.getLogger(__name__)

STAGING_DIR = ".deploy"  # under the store root; no manifest.json at its top, so ModelStore.list() skips it



def prepare_staging(store_root: Path, model_id: str, raw_index: bytes) -> Path:
    """The staging directory for this exact index; leftovers of another version are thrown away."""
    staging = store_root / STAGING_DIR / model_id
    index_copy = staging / "index.json"
    if staging.exists() and not (index_copy.is_file() and index_copy.read_bytes() == raw_index):
        shutil.rmtree(staging)
    if not staging.exists():
        staging.mkdir(parents=True)
        index_copy.write_bytes(raw_index)
    return staging

def verify_staged(index: ModelIndex, staging: Path, hashed: set[str]) -> None:
    """Sizes and hashes of every staged file, and a manifest that agrees with the index. Raises DeployFailed."""
    for remote in index.files:
        path = staging / remote.name
        size = path.stat().st_size if path.is_file() else -1
        if size != remote.bytes:
            raise DeployFailed(f"file {remote.name!r}: {size} bytes staged, index says {remote.bytes}")
        if remote.name not in hashed and sha256_file(path) != remote.sha256:
            path.unlink()
            raise DeployFailed(f"file {remote.name!r}: staged copy does not match its sha256; not installed")
    try:
        manifest = Manifest.from_json((staging / MANIFEST_NAME).read_text(), f"{index.model_id}/{MANIFEST_NAME}")
    except (ManifestError, UnicodeDecodeError) as error:
        raise DeployFailed(str(error)) from error
    listed = {r.name: (r.bytes, r.sha256) for r in index.files if r.name != MANIFEST_NAME}
    declared = {name: (entry.bytes, entry.sha256) for name, entry in manifest.files.items()}
    if manifest.id != index.model_id or listed != declared:
        raise DeployFailed(f"manifest of {index.model_id!r} disagrees with the index; not installed")

def install_staged(store_root: Path, model_id: str, staging: Path) -> None:
    """Swap the staged directory in with two renames; the old copy is removed only afterwards."""
    (staging / "index.json").unlink()
    target = store_root / model_id
    previous = store_root / STAGING_DIR / f"{model_id}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    _fsync_dir(store_root)

def recover_interrupted_install(store_root: Path, model_id: str) -> None:
    """A crash between the two renames of `install_staged` leaves the old copy aside: put it back."""
    target = store_root / model_id
    previous = store_root / STAGING_DIR / f"{model_id}.previous"
    if previous.is_dir() and not target.exists():
        logger.warning("restoring %s from an interrupted install", model_id)
        previous.rename(target)

def installed_matches(store_root: Path, index: ModelIndex) -> bool:
    """True if the store already holds exactly this version, every file hashed."""
    directory = store_root / index.model_id
    for remote in index.files:
        path = directory / remote.name
        if not path.is_file() or path.stat().st_size != remote.bytes or sha256_file(path) != remote.sha256:
            return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
