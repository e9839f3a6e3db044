r"""Runs an imbalance study: `python -m experiments.sweep [--config=...] [--workdir=...]`.

With no flags it runs the main job, the quickstart study on the offline `digits` data.
Examples:

  python -m experiments.sweep                     # CPU: one single-threaded device per core
  python -m experiments.sweep --cpu_devices=1     # CPU: one multi-threaded device
                                                  # (the default for one-model studies)
  python -m experiments.sweep --config=experiments/configs/mnist_step.py \
      --config.data_dir=../shared/data/mnist --config.rhos='(100, 1000)' \
      --config.mus='(0.5,)' --config.repetitions=2 --config.iterations=2000 \
      --workdir=runs/mnist_demo

It writes WORKDIR/results.sqlite and results.csv (their columns: results.columns.md),
metrics.jsonl (per-model curves) and, with config.make_figures (the default), the report
(report.html, report.md, report.json) and figures/. Rerunning the same command resumes:
finished population groups are skipped. One sweep at a time per workdir: a second one
says who holds it and exits (`--wait` waits). Ctrl-C or SIGTERM stops within seconds (a
second signal, or 10 s, ends the process at once); every stored group is kept and the
rerun resumes.

Several processes (`--coordinator_address`, `--num_processes`, `--process_id`; every
process runs the same command, process 0 writes the store): if one dies, the others
stop with an error within seconds (a failed collective) or, at the latest, after
`--heartbeat_timeout_s`; rerunning every process resumes.
"""

import contextlib
import logging as std_logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import traceback

# TensorFlow's INFO lines from C++ (a user's setting wins). TF 2.21 logs its start-up
# notices through absl, which ignores this; `imbjax.datasets.tfds_source.tensorflow`
# (TF's one importer, used only by studies that read through tfds or tf.data) drops those.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from imbjax import engine
from imbjax import metrics_log
from imbjax import store as store_lib
from imbjax import tables
from imbjax import workdir_lock
from imbjax import study

_QUICKSTART = os.path.join(os.path.dirname(__file__), "configs", "quickstart.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _QUICKSTART, "Study config file (ml_collections).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, figures and "
                               "checkpoints (default: runs/<config file name>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, to shard populations over "
    "several hosts with jax.distributed (every process runs the same command).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 30, "With --coordinator_address: seconds without a heartbeat "
    "after which a process counts as dead and every other process stops with an error "
    "(jax.distributed; its own default, 100 s, kept a survivor waiting for minutes). "
    "Rerunning the same command resumes.")
_WAIT = flags.DEFINE_bool("wait", False, "If another sweep holds the workdir, wait for "
                          "it to finish instead of exiting.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto", "On a CPU host: split it into this many single-threaded "
    "devices and shard each population's models over them; 0: one per core; 1: one "
    "multi-threaded device; auto (default): one per core when the study's largest "
    "population has at least as many models as there are cores, else 1. On 2 cores one "
    "per core trained 32 LeNet-5s 1.6x as fast as one device (benchmarks/README.md) and "
    "ran the main job in 1:57 against 2:27 min; one model alone ran 1.4x faster on one "
    "two-threaded device. How many single-threaded devices there are does not change a "
    "model's results.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "auto", "Where compiled XLA programs are kept, so a rerun "
    "skips its compiles (the quickstart's 22 s of compiling became 4 s on 2 cores); "
    "results are the same bit for bit. auto (default): JAX_COMPILATION_CACHE_DIR if "
    "set, else $IMBJAX_CACHE_DIR or ~/.cache/imbjax, per machine; none: no cache; or a "
    "directory (kept private: one that others can write is refused).")


def cpu_devices(flag: str, config) -> int:
  """The CPU device count for `--cpu_devices` (see its help); touches no JAX backend.

  Raises:
    app.UsageError: for a value that is neither 'auto' nor an int >= 0.
  """
  if flag != "auto":
    try:
      n = int(flag)
    except ValueError:
      n = -1
    if n < 0:
      raise app.UsageError(f"--cpu_devices must be 'auto' or an int >= 0 (0: one per "
                           f"core), got {flag!r}")
    return n
  cores = os.cpu_count() or 1
  return cores if study.largest_population(config) >= cores else 1


_GRACE_S = 10.0
_WAKEUP: list[socket.socket] = []
_ANNOUNCE_ONCE = threading.Lock()  # taken by the first `_announce`, never released


def _announce(name: str) -> None:
  """Says once, whichever thread sees the signal first, that the sweep is stopping.

  The watcher thread usually does; the main thread does when its KeyboardInterrupt
  reaches `main` first (it then ends the process before the watcher gets the GIL).
  """
  if _ANNOUNCE_ONCE.acquire(blocking=False):
    print(f"\nsweep: {name}, stopping; stored groups are kept and rerunning the same "
          "command resumes", file=sys.stderr, flush=True)


def _stop_on_signals() -> None:
  """SIGINT/SIGTERM: interrupt the study, then end the process if it lingers.

  The signal raises KeyboardInterrupt in the main thread (a group in flight is rolled
  back; stored groups stay). The main thread only sees it between bytecodes, which may
  be long inside XLA, so the C-level handler also wakes a watcher thread (through
  `signal.set_wakeup_fd`) that, on a second signal or after `_GRACE_S` seconds, exits
  without running exit handlers (which could wait on background threads for tens of
  seconds). A SIGINT the shell asked to ignore (a background job) stays ignored.
  """
  reader, writer = socket.socketpair()
  _WAKEUP.extend([reader, writer])  # kept open for the life of the process
  writer.setblocking(False)
  signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

  def interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)

  if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, interrupt)
  signal.signal(signal.SIGTERM, interrupt)

  def watch():
    sig = reader.recv(1)[0]
    _announce(signal.Signals(sig).name)
    reader.settimeout(_GRACE_S)
    with contextlib.suppress(TimeoutError):
      reader.recv(1)
    print("sweep: stopped", file=sys.stderr, flush=True)
    os._exit(128 + sig)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="sweep-signals", daemon=True).start()


def _stored_rows(workdir) -> int | str:
  try:
    with sqlite3.connect(f"file:{os.path.join(workdir, store_lib.DB_NAME)}?mode=ro",
                         uri=True) as db:
      return db.execute(f"SELECT COUNT(*) FROM {store_lib.TABLE}").fetchone()[0]
  except sqlite3.Error:
    return "no"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _stop_on_signals()
  # JAX probes for a TPU at start-up and logs the miss at INFO; other backends' messages
  # (a GPU that fails to start) are warnings and still show.
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])
  lock = None
  if not _PROCESS_ID.value:  # process 0 (or the only one) writes the store
    lock = workdir_lock.WorkdirLock(workdir, wait=_WAIT.value,
                                 on_wait=lambda m: print(m, file=sys.stderr, flush=True))
    try:
      lock.acquire()
    except workdir_lock.WorkdirBusy as e:
      sys.exit(f"sweep: {e}")
  try:
    _run(config, workdir)
  except KeyboardInterrupt as e:
    name = e.args[0] if e.args and e.args[0] in ("SIGINT", "SIGTERM") else "SIGINT"
    _announce(name)
    print(f"sweep: interrupted; {_stored_rows(workdir)} rows stored in {workdir}",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signal.Signals[name])  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    if not _COORDINATOR.value:
      raise
    # Multi-process: a failed collective (a peer died) leaves jax.distributed's exit
    # handler waiting on the dead peer until its heartbeat times out; say why and go.
    traceback.print_exc()
    print(f"sweep: process {_PROCESS_ID.value} failed; {_stored_rows(workdir)} rows "
          f"stored in {workdir}; rerun every process to resume", file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    if lock is not None:
      lock.release()
    os._exit(1)  # pylint: disable=protected-access
  finally:
    if lock is not None:
      lock.release()


def _run(config, workdir):
  try:
    cache = engine.use_compilation_cache(_COMPILATION_CACHE.value)
  except ValueError as e:
    raise app.UsageError(f"--compilation_cache: {e}") from e
  print(f"compilation cache: {cache or 'none'}")
  n = cpu_devices(_CPU_DEVICES.value, config)
  if n != 1:
    engine.use_cpu_devices(n)
  if _COORDINATOR.value:
    # Every process builds the same deterministic grid; the model axis of each
    # population is sharded over all devices of all processes; process 0 writes the store.
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value)
  logging.set_verbosity(logging.INFO)
  result = study.train_and_evaluate(config, workdir, log=print)
  if "store" not in result:  # not process 0: nothing to print
    return
  with store_lib.ResultsStore(workdir) as store:
    rows = store.rows()
  print(f"\n{result['rows']} new rows; {len(rows)} in {result['store']}\n")
  print("Multi-class ROC AUC (x100), mean ± std over repetitions:")
  print(tables.summary_table(rows, "auc"))
  print("\nAccuracy (x100):")
  print(tables.summary_table(rows, "accuracy"))
  print(f"\nper-model curves: {os.path.join(workdir, metrics_log.METRICS_NAME)}; columns "
        f"of {store_lib.CSV_NAME}: {os.path.join(workdir, 'results.columns.md')}")
  if config.make_figures:
    # The report draws the figures and tables.md too (figures.make_all). Imported here:
    # matplotlib and scipy.stats cost ~2 s of a sweep's start-up otherwise.
    from imbjax import report  # pylint: disable=g-import-not-at-top
    paths = report.write_report(workdir)
    print(f"\nfigures and tables: {os.path.join(workdir, 'figures')}")
    print("report:", *[str(p) for p in paths], sep="\n  ")


if __name__ == "__main__":
  app.run(main)
