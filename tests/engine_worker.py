"""Subprocess worker for the sharding tests (device count is fixed when JAX starts).

  python tests/engine_worker.py OUT.npz [--distributed PORT NUM_PROCS PROC_ID | --single-only]

Trains a small fixed population twice: on the mesh of every device (sharded model axis)
and, in single-process mode, unsharded on one device; saves the parameters of both.
``--single-only``: the unsharded run alone (the reference of the multi-process run).
"""

import re
import sys

import jax

if "--distributed" in sys.argv:
  i = sys.argv.index("--distributed")
  port, nproc, pid = sys.argv[i + 1:i + 4]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=int(nproc), process_id=int(pid))

import numpy as np  # noqa: E402

from imbjax import engine  # noqa: E402


def problem():
  rng = np.random.default_rng(0)
  images = rng.random((256, 28, 28, 1), dtype=np.float32)
  labels = rng.integers(0, 10, 256).astype(np.int32)
  # 'banded', not CPU's 'auto' ('winograd'): Winograd's transforms amplify the float
  # reassociation between device layouts ~30x, and this checks the engine at 2e-5.
  trainer = engine.Trainer(batch_size=8, total_steps=6, conv_impl="banded")
  members = engine.stack_members([
      engine.make_member(jax.random.key(i), np.arange(40 + 30 * i), 10,
                      base_lr=0.01 * (i + 1), plan_labels=labels[:40 + 30 * i])
      for i in range(3)])
  return trainer, members, engine.TrainData(images, labels)


def train(mesh):
  trainer, members, data = problem()
  members, size = engine.pad_population(members, len(mesh.devices.flat) if mesh else 1)
  m = engine.place(members, mesh)
  d = engine.place(data, mesh, replicated=True)
  state = engine.init_population(trainer, m)
  hlo = engine.loop._train_chunk_jit.lower(trainer, state, m, d, 6, engine.chunk_mesh(m)).compile().as_text()
  state, _ = engine.train_chunk(trainer, state, m, d, 6)
  logits = engine.predict(trainer, state, d.images[:64], batch_size=32)
  flat = {"/".join(str(k.key) for k in path): v for path, v in
          jax.tree_util.tree_leaves_with_path(engine.fetch(state.params))}
  flat = {k: v[:size] for k, v in flat.items()}
  flat["logits"] = engine.fetch(logits)[:size]
  # The models are independent: a collective in the step would make the devices wait
  # for each other (see `population._train_chunk`).
  # `fit` from a fresh state compiles the chunk once: the first chunk gets the layout
  # every later chunk has (`engine.shard_like`), not XLA's choice for a fresh state.
  before = engine.loop._train_chunk_jit._cache_size()
  engine.fit(trainer, engine.init_population(trainer, m), m, d, num_steps=6, chunk_steps=3)
  flat["fit_compiles"] = np.array(engine.loop._train_chunk_jit._cache_size() - before)
  flat["collectives"] = np.array(len(re.findall(
      r"= \S+ (?:all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)"
      r"(?:-start)?\(", hlo)))
  return flat


def main():
  out = sys.argv[1]
  result = {"num_devices": np.array(len(jax.devices()))}
  if "--single-only" not in sys.argv:
    sharded = train(engine.model_mesh())
    result.update({"sharded/" + k: v for k, v in sharded.items()})
  if "--distributed" not in sys.argv:
    single = train(None)
    result.update({"single/" + k: v for k, v in single.items()})
  if jax.process_index() == 0:
    np.savez(out, **result)


if __name__ == "__main__":
  main()
