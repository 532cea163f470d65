"""State files readable by their owner only: the journal, the bundled engine's data, log and
``engine.json``.

A journal holds the variables of its jobs, the engine's database holds everything, and its
log may quote both: each is created ``0600`` in folders created ``0700``. A folder that
already exists is left as it is (a user may have chosen to share it); a file that already
exists keeps its mode too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "PRIVATE_UMASK",
    "private_dir",
    "private_file",
    "write_private",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077
"""The umask of the bundled engine's process: what Java creates is its owner's only."""


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent as ``0700`` (existing ones left alone)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process
            folder.mkdir(mode=PRIVATE_DIR)
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is reduced by the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as ``0600`` unless it exists (its folders as :func:`private_dir`)."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a ``0600`` file (replacing it whole)."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
