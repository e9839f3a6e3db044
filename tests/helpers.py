"""Helpers shared by test modules."""

import fcntl
import json


def once_per_session(tmp_path_factory, name: str, make):
  """`make()`'s JSON value, computed once per pytest session and shared by its xdist
  workers (pytest-xdist's documented pattern, with a POSIX file lock): the first worker
  to ask computes it, under the lock, and writes it next to the workers' temp folders;
  the others read it. Without xdist, it is simply `make()` once.

  The value goes through JSON: floats round-trip exactly (Python writes the shortest
  repr that reads back to the same double), but NaN does not compare equal to itself
  and tuples come back as lists, so keep such values out of what is shared.
  """
  root = tmp_path_factory.getbasetemp().parent  # common to the session's workers
  path = root / f"{name}.json"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if path.is_file():
        return json.loads(path.read_text())
      value = make()
      tmp = path.with_suffix(".tmp")
      tmp.write_text(json.dumps(value))
      tmp.replace(path)
      return json.loads(path.read_text())  # as the other workers see it
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
