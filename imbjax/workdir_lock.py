"""One sweep per workdir: `WorkdirLock`, an fcntl lock file that says who holds it.

A second sweep on a held workdir gets `WorkdirBusy` naming the holder (pid, host, start
time, command), or waits with ``wait=True``; a lock left by a dead process on this host
is taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import pathlib
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

LOCK_NAME = "sweep.lock"

_log = logging.getLogger(__name__)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock; `holder` says who."""

  def __init__(self, message: str, holder: Mapping[str, Any]):
    super().__init__(message)
    self.holder = dict(holder)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


class WorkdirLock:
  """An exclusive lock on a workdir, so that two sweeps never train the same groups.

  `fcntl.flock` on ``WORKDIR/sweep.lock``: the kernel drops the lock when its holder
  dies, however it dies. The file records the holder (pid, host, start time, command)
  for the refusal message. A lock still held by a process that is not alive on this
  host (a forked child kept the descriptor) is taken over: the file is replaced and
  the old holder keeps a lock on a file nobody opens. flock does not reach across
  hosts on every network file system; run one sweep per workdir there.

  Args:
    workdir: the study directory (created if missing).
    wait: when the lock is held, wait for it instead of raising `WorkdirBusy`.
    poll_s: seconds between attempts while waiting.
    on_wait: called once with the holder message when a wait starts.

  Example::

    with WorkdirLock(workdir):
      train_and_evaluate(config, workdir)
  """

  def __init__(self, workdir: str | os.PathLike, *, wait: bool = False,
               poll_s: float = 1.0, on_wait=None):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self.wait = wait
    self.poll_s = poll_s
    self.on_wait = on_wait
    self._fd: int | None = None

  def holder(self) -> dict:
    """The holder recorded in the lock file ({} if none or unreadable)."""
    try:
      holder = json.loads(self.path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def acquire(self) -> "WorkdirLock":
    """Takes the lock, waiting if `wait`; returns self.

    Raises:
      WorkdirBusy: if another live process holds it and `wait` is False.
    """
    self.path.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = self.holder()
        if (holder.get("host") == socket.gethostname()
            and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"])):
          _log.warning("taking over %s from pid %s, which is no longer alive",
                       self.path, holder["pid"])
          with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
              os.unlink(self.path)
          os.close(fd)
          continue
        os.close(fd)
        message = self._busy_message(holder)
        if not self.wait:
          raise WorkdirBusy(message, holder) from None
        if not announced and self.on_wait is not None:
          self.on_wait(message + "; waiting")
        announced = True
        time.sleep(self.poll_s)
        continue
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if not same:  # replaced by a takeover between open and flock: try again
        os.close(fd)
        continue
      record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                "command": " ".join(sys.argv)}
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
      os.fsync(fd)
      self._fd = fd
      return self

  def _busy_message(self, holder: Mapping[str, Any]) -> str:
    who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
           f"{holder.get('started', '?')}")
    if holder.get("command"):
      who += f" ({holder['command']})"
    return (f"workdir {self.path.parent} is in use by {who}. Wait for it to finish "
            f"(--wait waits), or use another --workdir")

  def release(self) -> None:
    """Releases the lock (idempotent)."""
    if self._fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()
