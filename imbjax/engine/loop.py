"""The population loop: chunks of scanned, vmapped steps, model blocks, shard_map, the
streamed loop, prediction, and `fit` with Orbax checkpoints."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax
import jax
import numpy as np
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from imbjax.engine.devices import MODEL_AXIS, chunk_mesh, fetch, shard_like
from imbjax.engine.state import Member, TrainData, TrainState, population_size
from imbjax.engine.step import (_platform, _restart, apply_with_head, check_output_only,
                                train_step)
from imbjax.engine.trainer import Trainer

# Incremented each time `train_chunk`'s body is traced; tests use it to show that a
# population shape compiles once, not once per chunk.
TRACE_COUNT = {"train_chunk": 0, "predict": 0}


def _run_steps(trainer, state, members, data, num_steps, outputs_only=False, heads=None):
  """`num_steps` scanned steps of `train_step` vmapped over all models given."""
  step_fn = jax.vmap(lambda s, m, h: train_step(trainer, s, m, data,
                                                outputs_only=outputs_only, heads=h))

  def body(carry, _):
    carry, metrics = step_fn(carry, members, heads)
    return carry, metrics

  state, metrics = jax.lax.scan(body, state, None, length=num_steps)
  # Means over the chunk, per model; `last_loss` shows the state at the chunk's end.
  summary = {k: jnp.mean(v, axis=0) for k, v in metrics.items()}
  summary["last_loss"] = metrics["loss"][-1]
  return state, summary


def block_size(trainer: Trainer, models_per_shard: int) -> int:
  """Models per block for `train_chunk` (see `Trainer.model_block`)."""
  want = trainer.model_block
  if want is None:
    want = 1 if jax.default_backend() == "cpu" else models_per_shard
  want = max(1, min(want, models_per_shard))
  while models_per_shard % want:
    want -= 1
  return want


def _train_local(trainer, state, members, data, num_steps, outputs_only=False, heads=None):
  """One device's models: blocks of `block_size` models looped, each block vmapped."""
  p = population_size(members)
  block = block_size(trainer, p)
  if block == p:
    return _run_steps(trainer, state, members, data, num_steps, outputs_only, heads)
  n = p // block
  blocks = jax.tree.map(lambda a: a.reshape(n, block, *a.shape[1:]),
                        (state, members, heads))
  out = jax.lax.map(lambda smh: _run_steps(trainer, smh[0], smh[1], data, num_steps,
                                           outputs_only, smh[2]), blocks)
  return jax.tree.map(lambda a: a.reshape(p, *a.shape[2:]), out)


def _train_chunk(trainer, state, members, data, num_steps, mesh, outputs_only=False,
                 heads=None):
  TRACE_COUNT["train_chunk"] += 1
  if mesh is None:
    return _train_local(trainer, state, members, data, num_steps, outputs_only, heads)
  # Each device trains its slice of the model axis as its own program (shard_map): the
  # models are independent, so no device ever waits for another. Left to the SPMD
  # partitioner instead, the vmapped while-loop of `sampling.epoch_order` (cycle walking)
  # got an all-reduce of its condition in every iteration, a barrier between the devices
  # several times per step, and two devices scaled well below two processes (measured:
  # benchmarks/README.md, "Session 5").
  model = PartitionSpec(MODEL_AXIS)
  local = functools.partial(_train_local, trainer, num_steps=num_steps,
                            outputs_only=outputs_only)
  return jax.shard_map(
      lambda s, m, d, h: local(s, m, d, heads=h), mesh=mesh,
      in_specs=(model, model, PartitionSpec(), model), out_specs=model,
      check_vma=False)(state, members, data, heads)


_train_chunk_jit = jax.jit(_train_chunk, static_argnums=(0, 4, 5, 6), donate_argnums=(1,))


def all_output_only(members: Member) -> bool:
  """Whether every member trains only the output layers (two-phase phase 2)."""
  return bool(np.all(fetch(members.output_only)))


def train_chunk(trainer: Trainer, state: TrainState, members: Member, data: TrainData,
                num_steps: int, *, outputs_only: bool | None = None, heads=None
                ) -> tuple[TrainState, dict]:
  """Runs `num_steps` population steps under `lax.scan` (one compiled program).

  The models are processed in blocks of `block_size` models per device (see
  `Trainer.model_block`), each block running all `num_steps` steps before the next; the
  result is the same for any block size. The input state is donated (its buffers are
  reused); use the returned one.

  A population whose members all train only the output layers (`all_output_only`;
  `outputs_only=None` asks) runs the step without the frozen layers' backward pass
  (`train_step`'s ``outputs_only``); given its `heads` (`head_inputs`, computed once
  for the phase), the layers before the output layers are not run at all.

  Returns:
    (state, metrics): metrics are per-model arrays [P]: mean 'loss' and 'accuracy' over
    the chunk's batches and the 'last_loss'.
  """
  if outputs_only is None:
    outputs_only = all_output_only(members)
  outputs_only = bool(outputs_only) and bool(trainer.output_layers)
  if heads is not None and not outputs_only:
    raise ValueError("train_chunk: heads are for a population whose members all train "
                     "only their output layers (two-phase phase 2, cRT)")
  return _train_chunk_jit(trainer, state, members, data, num_steps, chunk_mesh(members),
                          outputs_only, heads)


# ----------------------------------------------------------------------------------------
# Phases that train only the output layers: the frozen layers' output computed once.


def _in_batches(x, batch_size: int):
  """[N, ...] -> [ceil(N / batch_size), batch_size, ...], the last batch padded with 0."""
  x = jnp.pad(x, ((0, (-x.shape[0]) % batch_size),) + ((0, 0),) * (x.ndim - 1))
  return x.reshape((-1, batch_size) + x.shape[1:])


def _head_inputs_local(trainer, params, plan, images):
  """One device's models: each model's first-output-layer inputs on the examples of its
  plan ([P, L] -> [P, L, ...]), in train mode, in batches of the trainer's batch size,
  the models in blocks as `_train_local` runs them (the step's own per-model program)."""
  p = population_size(params)
  block = block_size(trainer, p)
  b = trainer.batch_size

  def one_model(prm, idx):
    n = idx.shape[0]
    x = _in_batches(images[idx], b)

    def body(_, xb):
      return None, apply_with_head(trainer, {"params": prm}, xb, "stop", train=True,
                                   rngs={})

    _, h = jax.lax.scan(body, None, x)
    return h.reshape((-1,) + h.shape[2:])[:n]

  blocks = jax.tree.map(lambda a: a.reshape((p // block, block) + a.shape[1:]),
                        (params, plan))
  out = jax.lax.map(lambda t: jax.vmap(one_model)(*t), blocks)
  return out.reshape((p,) + out.shape[2:])


def _head_inputs(trainer, params, plan, images, mesh):
  if mesh is None:
    return _head_inputs_local(trainer, params, plan, images)
  model = PartitionSpec(MODEL_AXIS)
  return jax.shard_map(functools.partial(_head_inputs_local, trainer), mesh=mesh,
                       in_specs=(model, model, PartitionSpec()), out_specs=model,
                       check_vma=False)(params, plan, images)


_head_inputs_jit = jax.jit(_head_inputs, static_argnums=(0, 4))


def head_inputs(trainer: Trainer, state: TrainState, members: Member, data: TrainData):
  """What each model's first output layer receives on every example of its plan:
  [P, L, ...], for `train_chunk(..., heads=...)`.

  Valid while the layers before the output layers do not change (every member
  ``output_only``) and compute the same in every step: no batch statistics and no
  random draws before the output layers (`frozen_prefix_is_fixed`).
  """
  return _head_inputs_jit(trainer, state.params, members.plan, data.images,
                          chunk_mesh(members))


@functools.lru_cache(maxsize=64)
def _head_spec(trainer: Trainer) -> jax.ShapeDtypeStruct | None:
  """Shape and dtype of one example's first-output-layer input in train mode, or None
  when the layers before it draw random numbers (dropout: no rng is given here)."""
  dummy = jnp.zeros((1,) + tuple(trainer.input_shape), jnp.float32)
  variables = jax.eval_shape(
      lambda: trainer.module().init({"params": jax.random.key(0),
                                     "dropout": jax.random.key(0)}, dummy, train=False))
  try:
    out = jax.eval_shape(lambda v: apply_with_head(trainer, v, dummy, "stop", train=True,
                                                   rngs={}), variables)
  except flax.errors.InvalidRngError:
    return None
  return jax.ShapeDtypeStruct(out.shape[1:], out.dtype)


def frozen_prefix_is_fixed(trainer: Trainer) -> bool:
  """Whether the layers before the trainer's output layers give the same output in every
  training step while frozen: the model names output layers, keeps no batch statistics,
  and draws no random numbers (dropout) before its first output layer."""
  return (bool(trainer.output_layers) and not trainer.has_batch_stats
          and _head_spec(trainer) is not None)


def head_cache_bytes(trainer: Trainer, members: Member) -> int:
  """Bytes of `head_inputs` for `members` on the device that holds the most of them."""
  spec = _head_spec(trainer)
  mesh = chunk_mesh(members)
  per_device = -(-population_size(members) // (1 if mesh is None else mesh.devices.size))
  return int(per_device * members.plan.shape[-1] * np.prod(spec.shape)
             * spec.dtype.itemsize)


def use_head_cache(trainer: Trainer, members: Member, data, want: bool | None, *,
                   outputs_only: bool | None = None, state: TrainState | None = None
                   ) -> bool:
  """Whether `fit` trains `members` from `head_inputs` (see `fit`'s `cache_heads`).

  `outputs_only`, where the caller has it, is `all_output_only(members)`. By default
  (`want` None) the cache must fit in an eighth of a device's memory budget and beside
  what the phase keeps there already (`state`, `members`, `data`:
  `memory.resident_bytes`),
  which the study's memory plan (`engine.memory.plan`) has checked without it.
  """
  if outputs_only is None:
    outputs_only = all_output_only(members)
  if want is False or callable(data) or not outputs_only:
    return False
  if not frozen_prefix_is_fixed(trainer):
    if want:
      raise ValueError(
          f"cache_heads=True but the layers before the output layers "
          f"{trainer.output_layers} of {trainer.model_name} are not fixed while frozen "
          f"(batch statistics: {trainer.has_batch_stats}; or a random draw, e.g. "
          f"dropout, before them): use cache_heads=None or False")
    return False
  if want:
    return True
  if _platform(members) != "cpu":  # the same bits as the full step: shown on CPU only
    return False
  from imbjax.engine import memory  # pylint: disable=g-import-not-at-top
  budget, _ = memory.device_budget()
  free = budget - memory.resident_bytes((state, members, data))
  return head_cache_bytes(trainer, members) <= min(budget // 8, free)


def eval_block(trainer: Trainer) -> int:
  """Models evaluated together by `predict`: 1 on CPU, 32 elsewhere (`model_block` if set).

  Fixed, not derived from the population: with the model axis padded to whole blocks,
  every model is evaluated by the same program whatever population it trained in, so
  its logits (and a stored row) do not depend on the population's size.
  """
  if trainer.model_block is not None:
    return trainer.model_block
  return 1 if jax.default_backend() == "cpu" else 32


def _apply(trainer, variables, x, head=None):
  """The model in eval mode on `x`: logits; with ``head='both'``, (logits, the input of
  its first output layer, as float32); with an array `head`, logits with that array fed
  to the first output layer in place of what the layers before it compute (those are
  then unused, and XLA drops them)."""
  if head is None:
    return trainer.module().apply(variables, x, train=False)
  out = apply_with_head(trainer, variables, x, head, train=False)
  return (out[0], out[1].astype(jnp.float32)) if isinstance(head, str) else out


def _predict_local(trainer, params, batch_stats, images, batch_size, indices=None,
                   head=None):
  """One device's models, in blocks of `eval_block` (padded by repeating the last).

  With `indices` ([P, n]), model p sees ``images[indices[p]]`` (its own examples);
  without, every model sees all of `images`. ``head='both'``: (logits, the first
  output layer's inputs); ``head='given'``: `images` are those inputs, per model
  ([P, N, ...]), and only the output layers are evaluated.
  """
  TRACE_COUNT["predict"] += 1

  def batches(x):
    return _in_batches(x, batch_size), x.shape[0]

  def one_model(p, bs, idx, own):
    variables = {"params": p}
    if trainer.has_batch_stats:
      variables["batch_stats"] = bs
    if head == "given":
      x, n = batches(own)
      # The layers before the output layers see zeros and are dropped as unused.
      dummy = jnp.zeros((batch_size,) + tuple(trainer.input_shape), jnp.float32)

      def body(_, hb):
        return None, _apply(trainer, variables, dummy, hb).astype(jnp.float32)
    else:
      x, n = batches(images if idx is None else images[idx])

      def body(_, xb):
        out = _apply(trainer, variables, xb, head)
        return None, (jax.tree.map(lambda a: a.astype(jnp.float32), out))

    _, out = jax.lax.scan(body, None, x)
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)

  p = population_size(params)
  block = min(eval_block(trainer), p)
  extra = (-p) % block
  own = images if head == "given" else None
  tree = (params, batch_stats, indices, own)
  if extra:
    tree = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, 0)]), tree)
  blocks = jax.tree.map(lambda a: a.reshape((-1, block) + a.shape[1:]), tree)
  out = jax.lax.map(lambda t: jax.vmap(one_model)(*t), blocks)
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:p], out)


def _predict(trainer, params, batch_stats, images, indices, batch_size, mesh, head=None):
  if mesh is None:
    return _predict_local(trainer, params, batch_stats, images, batch_size, indices, head)
  model = PartitionSpec(MODEL_AXIS)
  local = functools.partial(_predict_local, trainer, batch_size=batch_size, head=head)
  per_model_images = model if head == "given" else PartitionSpec()
  if indices is None:
    return jax.shard_map(local, mesh=mesh, in_specs=(model, model, per_model_images),
                         out_specs=model, check_vma=False)(params, batch_stats, images)
  return jax.shard_map(
      lambda p, b, x, i: local(p, b, x, indices=i), mesh=mesh,
      in_specs=(model, model, PartitionSpec(), model), out_specs=model,
      check_vma=False)(params, batch_stats, images, indices)


_predict_jit = jax.jit(_predict, static_argnums=(0, 5, 6, 7))


def predict(trainer: Trainer, state: TrainState, images, *, batch_size: int = 500,
            indices=None, with_head_inputs: bool = False):
  """Logits of every model on `images`: [P, N, C].

  Each model sees the examples in batches of `batch_size` (fixed per model, so a model's
  logits do not depend on how many models are evaluated beside it), and models go
  through in blocks of `eval_block`, each device its own share of a sharded population.

  Args:
    trainer, state: the population.
    images: [N, H, W, C] examples every model sees, or, with `indices`, the pool that
      each model's own examples are taken from (e.g. the training split).
    batch_size: examples per model per evaluation step.
    indices: optional int [P, n]: model p is evaluated on ``images[indices[p]]``; the
      result is then [P, n, C].
    with_head_inputs: also return what each model's first output layer receives (the
      trainer's `output_layers`), [P, N, ...], as (logits, head inputs); with
      `predict_heads`, a population whose other layers are frozen (phase 2) is then
      evaluated again at the cost of its output layers alone. The logits equal those
      of the same call without it (bit for bit on CPU: tests/test_frozen_prefix.py).
  """
  n = images.shape[0] if indices is None else indices.shape[-1]
  if indices is not None:
    indices = jnp.asarray(indices, jnp.int32) if not isinstance(indices, jax.Array) \
        else indices
  return _predict_jit(trainer, state.params, state.batch_stats, images, indices,
                      min(batch_size, n), chunk_mesh(state.params),
                      "both" if with_head_inputs else None)


def predict_heads(trainer: Trainer, state: TrainState, inputs, *, batch_size: int = 500):
  """Logits [P, N, C] of every model from its own head inputs ([P, N, ...], as
  `predict(..., with_head_inputs=True)` returns them).

  Only the output layers run (the layers before are given zeros and dropped), in the
  batches of `predict` with the same `batch_size`. It equals `predict` on the images
  the inputs came from while the layers before the output layers are unchanged and the
  model has no batch statistics (eval mode then reads no state those layers could
  change); the caller checks that (the study compares both at its first and last log
  points of a phase).
  """
  return _predict_jit(trainer, state.params, state.batch_stats, inputs, None,
                      min(batch_size, inputs.shape[1]), chunk_mesh(state.params), "given")


def _train_chunk_streamed(trainer, state, members, images, labels):
  TRACE_COUNT["train_chunk"] += 1
  b = images.shape[2]
  p = images.shape[1]
  # Each model's batch arrives from the host: make it the model's whole "dataset" for the
  # step, with a plan covering it once. The step is then the very same `train_step`.
  members = members.replace(
      plan=jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32), (p, b)),
      plan_len=jnp.full((p,), b, jnp.int32), classwise=jnp.zeros((p,), bool))
  step_fn = jax.vmap(lambda s, m, x, y: train_step(trainer, s, m, TrainData(x, y)))

  def body(carry, batch):
    return step_fn(carry, members, *batch)

  state, metrics = jax.lax.scan(body, state, (images, labels))
  summary = {k: jnp.mean(v, axis=0) for k, v in metrics.items()}
  summary["last_loss"] = metrics["loss"][-1]
  return state, summary


_train_chunk_streamed_jit = jax.jit(_train_chunk_streamed, static_argnums=0,
                                    donate_argnums=(1,))


def train_chunk_streamed(trainer: Trainer, state: TrainState, members: Member,
                         images, labels) -> tuple[TrainState, dict]:
  """Like `train_chunk`, for data that does not fit on the device.

  Args:
    images: [S, P, B, H, W, C]: S steps of one batch per model, streamed from the host
      (`imbjax.datasets.streaming` applies each model's index plan and augmentation).
    labels: [S, P, B].

  Each step is `train_step` with the model's batch as its data: same update, loss
  coefficients, phase-2 masking and divergence handling as the device-resident path.
  Plans and class-wise sampling in `members` are ignored (the stream already applied them).
  """
  return _train_chunk_streamed_jit(trainer, state, members, images, labels)


# ----------------------------------------------------------------------------------------
# The loop: chunks of scanned steps, metrics between chunks, Orbax checkpoints.


def fit(trainer: Trainer, state: TrainState, members: Member, data, *,
        num_steps: int, chunk_steps: int = 500, checkpoint_dir=None,
        checkpoint_every: int = 0, log_every: int | None = None,
        on_chunk: Callable[[int, dict, TrainState], None] | None = None,
        cache_heads: bool | None = None) -> TrainState:
  """Trains a population for `num_steps` iterations, `chunk_steps` per compiled call.

  Args:
    trainer, state, members: as for `train_chunk` (state is donated).
    data: the device-resident `TrainData`, or, for streamed input, a function
      ``data(first_step, num_steps) -> (images[S, P, B, ...], labels[S, P, B])``
      giving the host batches of those steps (see `train_chunk_streamed`).
    num_steps: iterations to reach (counted from the state's current step, so a state
      restored from a checkpoint continues where it stopped).
    chunk_steps: steps per `lax.scan` call; metrics come to the host only between chunks.
      Chunks of equal length share one compiled program; the last chunk may compile a
      second, shorter one.
    checkpoint_dir: if given, an Orbax checkpoint of the population is saved there every
      `checkpoint_every` steps (and at the end), and `fit` restores the newest one first:
      a killed long run resumes from its last checkpoint.
    log_every: if given, no chunk crosses a multiple of it, so `on_chunk` sees every
      log point (``step_done % log_every == 0``) whatever `chunk_steps` is.
    on_chunk: called as ``on_chunk(step_done, host_metrics, state)`` after each chunk
      (e.g. to evaluate the population at log points for convergence curves).
    cache_heads: for a population whose members all train only their output layers
      (two-phase phase 2, cRT) on device-resident data: compute what the output layers
      receive on each model's plan once (`head_inputs`) and run only the output layers
      in each step. None (default): on CPU, where the layers before are fixed while
      frozen (`frozen_prefix_is_fixed`) and the cache takes at most 1/8 of a device's
      memory, and no more than the state, members and data leave free there
      (`use_head_cache`); its parameters equal the full step's bit for bit there
      (tests/test_frozen_prefix.py). True: wherever they are fixed (on accelerators,
      unverified bit for bit). False: never.

  Returns:
    The trained state.
  """
  manager = None
  if checkpoint_dir is not None and checkpoint_every > 0:
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(
        checkpoint_dir, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    latest = manager.latest_step()
    if latest is not None:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
  if not callable(data):
    state = shard_like(state, members)  # one compiled program from the first chunk on
  outputs_only = all_output_only(members)
  done = int(fetch(state.step).reshape(-1)[0])
  heads = None
  if done < num_steps and use_head_cache(trainer, members, data, cache_heads,
                                         outputs_only=outputs_only, state=state):
    heads = head_inputs(trainer, state, members, data)  # the frozen layers, run once
  last_saved = done
  while done < num_steps:
    n = min(chunk_steps, num_steps - done)
    if log_every:  # chunks never cross a log point
      n = min(n, log_every - done % log_every)
    if callable(data):
      state, metrics = train_chunk_streamed(trainer, state, members, *data(done, n))
    else:
      state, metrics = train_chunk(trainer, state, members, data, n,
                                   outputs_only=outputs_only, heads=heads)
    done += n
    if on_chunk is not None:
      on_chunk(done, fetch(metrics), state)
    if manager is not None and (done - last_saved >= checkpoint_every or done == num_steps):
      manager.save(done, args=ocp.args.StandardSave(state))
      manager.wait_until_finished()
      last_saved = done
  if manager is not None:
    manager.close()
  return state


def fine_tune(trainer: Trainer, state: TrainState, members: Member, data, *,
              num_steps: int, source: Sequence[int] | None = None, **fit_kwargs
              ) -> TrainState:
  """Two-phase training's second phase, in one call.

  Starts each member from a trained model's parameters (and batch statistics), with a
  fresh optimiser at the member's base rate (`restart`), and trains only the trainer's
  `output_layers` where the member says ``output_only`` (as `methods.make_member(...,
  phase=2)` builds it: 0.1x the base rate, the imbalanced data).

  Example::

      phase1 = fit(trainer, init_population(trainer, members1), members1, data,
                   num_steps=10_000)
      members2 = stack_members([methods.make_member(methods.get('two_phase_oversampling'),
                                ..., phase=2)])
      phase2 = fine_tune(trainer, phase1, members2, data, num_steps=10_000, source=[1])

  Args:
    trainer: the population's trainer; it must name output layers.
    state: the trained (phase-1) population.
    members: the phase-2 members (leading axis P2).
    data: as for `fit`.
    num_steps: phase-2 iterations.
    source: for each phase-2 member, the index in `state` of the model it continues;
      None: member i continues model i.
    **fit_kwargs: passed to `fit` (chunk_steps, checkpoint_dir, on_chunk, ...).

  Returns:
    The fine-tuned state (leading axis P2).

  Raises:
    ValueError: output-only members and a trainer without output layers, or a `source`
      of the wrong length.
  """
  if source is not None:
    source = np.asarray(source)
    if source.shape != (population_size(members),):
      raise ValueError(f"source must give one phase-1 index per member "
                       f"({population_size(members)}), got shape {source.shape}")
  check_output_only(trainer, members)
  state = _continue(trainer, state, members, None if source is None else
                    np.asarray(source, np.int32), chunk_mesh(members))
  return fit(trainer, state, members, data, num_steps=num_steps, **fit_kwargs)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _continue(trainer, state, members, source, mesh):
  """Phase 2's start as one program: the source models gathered, `restart`, and the
  state laid out over the model axis as the members are (so `fit`'s `shard_like` has
  nothing to move). Eagerly, the per-leaf gathers, the optimiser init and the
  re-layout compiled ~55 small programs."""
  if source is not None:
    state = jax.tree.map(lambda x: x[source], state)
  state = _restart(trainer, state, members)
  if mesh is not None:
    state = jax.lax.with_sharding_constraint(
        state, NamedSharding(mesh, PartitionSpec(MODEL_AXIS)))
  return state
