"""One training at a time in a workdir: ``workdir_lock(workdir)``.

The lock is the file ``<workdir>/train.lock``, held with an exclusive ``fcntl.flock`` for the whole
run and holding its holder as JSON (host, pid, start time in UTC); a clean end (success, an error,
Ctrl-C) removes it. The kernel releases a flock when its process ends, however it ends (kill -9,
an out-of-memory kill, a preempted job), and on NFS when the client's lease ends, but then the file
stays. So:

- a lock that is held refuses the second run with one ``InputError`` naming the holder;
- a lock file that is free was left by a process that is gone: it is taken over with a warning
  naming that holder, so that a preempted or killed job resumes with the same command.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from absl import logging

from neurop_jax.errors import InputError

LOCK_NAME = "train.lock"


class WorkdirLockedError(InputError):
  """Another training holds the workdir."""


def _describe(holder: dict) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
          f"{holder.get('started', '?')}")


def _read(fd: int) -> dict:
  """The holder recorded in the lock file ({} when it is empty or unreadable)."""
  text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
  try:
    holder = json.loads(text) if text else {}
  except json.JSONDecodeError:
    holder = {"host": text[:80]}
  return holder if isinstance(holder, dict) else {}


def _acquire(path: Path, workdir) -> int:
  """An open descriptor of ``path`` holding its flock. A file removed by its holder between our
  open and our lock is opened again, so that two runs never hold two different files."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      raise WorkdirLockedError(
          f"workdir {workdir} is in use by another training ({_describe(holder)}): wait for "
          f"it to end or stop it, or train in another --workdir") from None
    try:
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[dict]:
  """Holds ``<workdir>/train.lock`` (the folder must exist) for the ``with`` block; yields the
  holder record written into it.

  Raises:
    WorkdirLockedError: another live process holds it; the message names that process.
  """
  path = Path(workdir) / LOCK_NAME
  fd = _acquire(path, workdir)
  try:
    previous = _read(fd)
    if previous:
      logging.warning("workdir %s: taking over the lock %s left by a training that has ended (%s)",
                      workdir, path, _describe(previous))
    holder = dict(host=socket.gethostname(), pid=os.getpid(),
                  started=datetime.datetime.now(datetime.timezone.utc).strftime(
                      "%Y-%m-%d %H:%M:%S UTC"))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)
    yield holder
  finally:
    path.unlink(missing_ok=True)  # before the flock is released: see _acquire
    os.close(fd)
