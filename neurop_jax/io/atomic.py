"""Atomic file writes: readers see the old file or the whole new one, never a partial file.

Every output of the project (images, GeoTIFFs, JSON records, split files, plots) is written to a
temporary file beside its target, named ``.<name>.partial-<random><suffix>`` so that a leftover
from a killed process is recognisable, then given the usual permissions (0666 less the umask, as
``open`` would) and moved into place with ``os.replace``. Any exception removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from neurop_jax.errors import InputError

PARTIAL_MARK = ".partial-"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary path beside ``path`` to write; on success it replaces ``path``.

  The folder of ``path`` is created. On an exception the temporary file is removed and
  ``path`` is left as it was.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL_MARK}",
                                  suffix=path.suffix)
  os.close(handle)
  tmp = Path(name)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  with atomic_path(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def check_writable_dir(folder: str | os.PathLike, option: str) -> None:
  """Raises ``InputError`` naming ``option`` (e.g. ``--out``) unless ``folder`` is a folder, or
  can be made one, that this process may write in. Nothing is created."""
  folder = Path(folder)
  if folder.exists() and not folder.is_dir():
    raise InputError(f"{option} {folder} is a file: give a folder (created if missing)")
  existing = folder
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise InputError(f"{option} {folder} cannot be created: {existing} is a file, not a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"{option} {folder}: no permission to write in {existing}; choose another "
                     "folder")
