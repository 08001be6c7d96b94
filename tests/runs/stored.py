"""The stored runs (real `rig run --sim` runs, see make_stored_runs.py), unpacked for a test."""

from __future__ import annotations

import tarfile
from pathlib import Path

STORED = Path(__file__).parent / "stored"
KINDS = ("completed-1000x", "library-1000x", "aborted", "killed")


def unpack(kind: str, dest: Path) -> Path:
    """Unpack the stored run `kind` into `dest` (created if needed); returns its run folder."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(STORED / f"{kind}.tar.gz") as tar:
        names = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        tar.extractall(dest, filter="data")
    (name,) = names
    return dest / name
