"""TensorBoard scalars without TensorFlow.

`SummaryWriter` has the interface of CLU's metric writers (`write_scalars(step,
scalars)`, `flush()`, `close()`) and writes a TensorBoard event file with the
`tensorboard` package's record framing and protocol buffers only. `tf.summary` (what
the study used before) imports TensorFlow, about 4 s of a two-minute quickstart that
never otherwise needs it; TensorBoard itself reads the file as it reads any.

Example::

    writer = SummaryWriter("runs/quickstart/tensorboard")
    writer.write_scalars(1, {"loss_mean": 2.3})
    writer.close()
"""

from __future__ import annotations

import os
import pathlib
import socket
import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class SummaryWriter:
  """Appends scalar events to ``logdir/events.out.tfevents.<time>.<host>.<pid>``."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = self.logdir / name
    self._file = open(self.path, "ab")  # pylint: disable=consider-using-with
    self._records = RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
              for k, v in scalars.items()]
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._records.flush()
      self._file.close()

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
