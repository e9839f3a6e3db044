"""Population training: many networks, one compiled program.

This module owns the vmapped train step and everything that makes a *population* of
models train as one program: the per-model recipe (`Member`), the per-model state
(`TrainState`), chunked `lax.scan` over steps, sharding of the model axis over devices
and hosts, divergence handling, and vmapped evaluation.

A method is data, not code. The step below never branches on a method name; each model's
`Member` row carries arrays that select its behaviour:

* ``plan``/``plan_len``: indices into the device-resident training set (baseline subset,
  oversampled or undersampled plan, partial ratios), consumed epoch by epoch with a fresh
  keyed permutation each epoch (`sampling.epoch_order`), or, when ``classwise`` is set,
  drawn class-wise with per-class probabilities interpolated from ``probs_start`` to
  ``probs_end`` (class-aware, square-root and progressively balanced sampling);
* ``base_lr``: the base learning rate (also held in the optimiser state);
* ``output_only``: two-phase phase 2 (update only the model's output layers);
* loss coefficients (``class_weights`` from ``reweight_start`` on, ``logit_offset``,
  ``margin``, ``logit_scale``, ``focal_gamma``): all neutral for plain cross-entropy.

One model and many models are the same code: `train_step` is written for one model and
`train_chunk` lifts it with `jax.vmap` over the leading model axis of `TrainState` and
`Member`, then runs ``num_steps`` of it under `lax.scan`. Metrics leave the device only
between chunks.

Typical use (see `train.py` for the study driver)::

    trainer = Trainer(model='lenet5', num_classes=10, batch_size=64, total_steps=10_000)
    members = stack_members([make_member(...), ...])     # host numpy, leading axis P
    state = init_population(trainer, members)
    for _ in range(n_chunks):
      state, metrics = train_chunk(trainer, state, members, data, num_steps=500)
    logits = predict(trainer, state, test_images)
"""

from imbjax.engine.devices import (COMPUTE_DTYPES, MODEL_AXIS, chunk_mesh, fetch,
                                   model_mesh, model_shards, place, resolve_compute_dtype,
                                   use_compilation_cache, use_cpu_devices)
from imbjax.engine.loop import (TRACE_COUNT, all_output_only, block_size, eval_block,
                                fine_tune, fit, frozen_prefix_is_fixed, head_inputs,
                                predict, predict_heads, train_chunk, train_chunk_streamed)
from imbjax.engine.state import (Member, TrainData, TrainState, make_member,
                                 pad_population, population_size, stack_members)
from imbjax.engine.step import (apply_with_head, batch_indices, batch_positions,
                                check_output_only, init_population,
                                init_state, loss_fn, restart, train_step)
from imbjax.engine.trainer import Trainer, inspect_model
