"""TensorBoard scalars without TensorFlow (`imbjax.summary_writer`)."""

import pathlib
import subprocess
import sys

from imbjax import summary_writer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_scalars_read_back_by_tensorboard(tmp_path):
  with summary_writer.SummaryWriter(tmp_path / "tb") as w:
    w.write_scalars(1, {"loss_mean": 2.5, "train_accuracy_mean": 0.25})
    w.write_scalars(2, {"loss_mean": 1.5})
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == ["loss_mean", "train_accuracy_mean"]
  assert [(e.step, e.value) for e in acc.Scalars("loss_mean")] == [(1, 2.5), (2, 1.5)]
  assert [(e.step, e.value) for e in acc.Scalars("train_accuracy_mean")] == [(1, 0.25)]


def test_the_sweep_and_its_writer_do_not_import_tensorflow(tmp_path):
  """TensorFlow (~4 s to import) is loaded only by the studies that read through tfds or
  tf.data (`tfds_source.tensorflow`), not by the sweep binary or its scalars."""
  code = (
      "import sys, experiments.sweep, imbjax.study\n"
      "from imbjax import summary_writer\n"
      f"w = summary_writer.SummaryWriter({str(tmp_path)!r}); w.write_scalars(1, {{'a': 1}})\n"
      "w.close()\n"
      "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
      "from imbjax.datasets import tfds_source\n"
      "tf = tfds_source.tensorflow()\n"
      "assert 'tensorflow' in sys.modules\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  # TensorFlow's C++ start-up notices are dropped by the quiet import.
  assert "oneDNN custom operations" not in out.stderr, out.stderr[-2000:]
