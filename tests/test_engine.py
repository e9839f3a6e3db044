"""Population engine: a population of P equals P separate runs; faults; sharding."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imbjax import engine

ROOT = pathlib.Path(__file__).resolve().parents[1]
N, C, B, STEPS = 256, 10, 8, 12


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  images = rng.random((N, 28, 28, 1), dtype=np.float32)
  labels = rng.integers(0, C, N).astype(np.int32)
  return engine.TrainData(jnp.asarray(images), jnp.asarray(labels))


def _members(labels, specs):
  out = []
  for i, kw in enumerate(specs):
    plan = np.sort(np.random.default_rng(i).choice(N, size=kw.pop("n", 60), replace=False))
    plan = plan[np.argsort(labels[plan], kind="stable")]
    out.append(engine.make_member(jax.random.key(100 + i), plan, C, plan_labels=labels[plan],
                               **kw))
  return out


def _single_run(trainer, member, data, steps):
  """The sequential reference: one model, a plain Python loop over a jitted step."""
  state = jax.jit(engine.init_state, static_argnums=0)(trainer, member)
  step = jax.jit(engine.train_step, static_argnums=0)
  for _ in range(steps):
    state, _ = step(trainer, state, member, data)
  return state


def _assert_tree_close(a, b, **kw):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_population_equals_separate_runs(data):
  """P models trained together == the same P models trained one at a time.

  The members mix methods as data: plain CE, class weights, a logit offset with
  focal loss, class-wise (class-balanced) sampling, and phase-2 output-only updates.
  Under 'banded', whose vmapped and single-model arithmetic agree to ~1e-7: Winograd's
  transforms make them differ by ~3e-6 in conv2's output, enough to flip a near-tie of
  its 2x2 max-pool now and then, which moves that model's parameters by ~1e-4 (seen
  under the tests' XLA optimisation level 0). 'winograd' is held to the population's
  own arithmetic by `test_model_block_does_not_change_results` and test_methods.
  """
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS, conv_impl="banded")
  specs = [
      dict(base_lr=0.01),
      dict(base_lr=0.01, n=100, class_weights=np.linspace(0.5, 2, C)),
      dict(base_lr=0.005, logit_offset=np.linspace(-1, 1, C), focal_gamma=2.0),
      dict(base_lr=0.01, classwise=True, probs_start=np.full(C, 0.1),
           margin=np.full(C, 0.3), logit_scale=2.0),
      dict(base_lr=0.01, output_only=True, n=30),
  ]
  members = _members(labels, specs)
  stacked = engine.stack_members(members)
  state = engine.init_population(trainer, stacked)
  state, metrics = engine.train_chunk(trainer, state, stacked, data, STEPS)
  assert metrics["loss"].shape == (len(specs),)
  for i, m in enumerate(members):
    # Pad the single member's plan like the stacked one (padding must not matter).
    m = m.replace(plan=np.asarray(stacked.plan[i]))
    ref = _single_run(trainer, m, data, STEPS)
    _assert_tree_close(jax.tree.map(lambda x: x[i], state.params), ref.params,
                       rtol=2e-5, atol=2e-6)
  logits = engine.predict(trainer, state, data.images[:50], batch_size=25)
  assert logits.shape == (len(specs), 50, C)


# Tolerances of engine-equivalence checks, per lowering. Blocks, vmap widths and
# devices sum some products in another order (float reassociation, ~1e-7 relative);
# Winograd's transforms (entries up to 3^7) amplify that ~30x (measured: parameters
# within 1.8e-5 absolute after 5 steps), so its bound is looser.
ENGINE_TOL = {"banded": dict(rtol=2e-5, atol=2e-6), "winograd": dict(rtol=1e-3, atol=1e-4)}


@pytest.mark.parametrize("impl", ["banded", "winograd"])
def test_model_block_does_not_change_results(data, impl):
  """Blocks of models looped inside the chunk == the whole population vmapped at once."""
  labels = np.asarray(data.labels)
  specs = [dict(base_lr=0.01 * (1 + i / 6), n=40 + 10 * i) for i in range(6)]
  stacked = engine.stack_members(_members(labels, specs))
  results = {}
  for block in (6, 1, 4):  # 4 does not divide 6: lowered to 3
    trainer = engine.Trainer(batch_size=B, total_steps=STEPS, model_block=block,
                          conv_impl=impl)
    state = engine.init_population(trainer, stacked)
    results[block] = engine.train_chunk(trainer, state, stacked, data, 5)
  assert engine.block_size(engine.Trainer(model_block=4), 6) == 3
  assert engine.block_size(engine.Trainer(model_block=9), 6) == 6
  assert engine.block_size(engine.Trainer(), 6) == (1 if jax.default_backend() == "cpu" else 6)
  ref_state, ref_metrics = results[6]
  assert not np.allclose(ref_state.params["fc2"]["kernel"][0],
                         ref_state.params["fc2"]["kernel"][1])
  for block in (1, 4):
    state, metrics = results[block]
    _assert_tree_close(state.params, ref_state.params, **ENGINE_TOL[impl])
    _assert_tree_close(state.opt_state, ref_state.opt_state, **ENGINE_TOL[impl])
    np.testing.assert_array_equal(state.step, ref_state.step)
    _assert_tree_close(metrics, ref_metrics, **ENGINE_TOL[impl])
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="model_block"):
      engine.Trainer(model_block=bad)


def test_bfloat16_compute_keeps_float32_state_and_tracks_float32(data):
  """compute_dtype='bfloat16': activations in bf16, everything stored stays float32."""
  labels = np.asarray(data.labels)
  stacked = engine.stack_members(_members(labels, [dict(base_lr=0.01), dict(base_lr=0.02)]))
  out = {}
  for dtype in ("float32", "bfloat16"):
    trainer = engine.Trainer(batch_size=B, total_steps=STEPS, compute_dtype=dtype)
    state = engine.init_population(trainer, stacked)
    state, metrics = engine.train_chunk(trainer, state, stacked, data, 6)
    logits = engine.predict(trainer, state, data.images[:32], batch_size=16)
    out[dtype] = (state, metrics, logits)
    # The module really computes in the requested dtype.
    module = trainer.module()
    params0 = jax.tree.map(lambda x: x[0], state.params)
    raw = module.apply({"params": params0}, data.images[:2], train=False)
    assert raw.dtype == jnp.dtype(dtype)
  (s32, m32, l32), (s16, m16, l16) = out["float32"], out["bfloat16"]
  for leaf in jax.tree.leaves((s16.params, s16.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
  assert l16.dtype == jnp.float32 and m16["loss"].dtype == jnp.float32
  # Same training within bf16 rounding (8 mantissa bits), but not bit-identical.
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=3e-2)
  # Training trajectories drift apart; the forward pass of the SAME parameters must agree
  # within bf16 rounding (logits of order 1, relative error ~2^-8 per op).
  bf16 = engine.Trainer(batch_size=B, total_steps=STEPS, compute_dtype="bfloat16")
  same = engine.predict(bf16, s32, data.images[:32], batch_size=16)
  assert same.dtype == jnp.float32
  np.testing.assert_allclose(same, l32, atol=0.05 * float(np.abs(l32).max()))
  assert not np.array_equal(np.asarray(same), np.asarray(l32))
  assert np.all(np.isfinite(np.asarray(l16)))
  with pytest.raises(ValueError, match=r"compute_dtype must be one of .*float16"):
    engine.Trainer(compute_dtype="float16")


@pytest.mark.parametrize("backend,want", [("cpu", "float32"), ("gpu", "bfloat16"),
                                          ("tpu", "bfloat16")])
def test_auto_compute_dtype_resolves_per_backend_once(backend, want, monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert engine.resolve_compute_dtype("auto") == want
  trainer = engine.Trainer(compute_dtype="auto")
  assert trainer.compute_dtype == want  # stored resolved: hash and program agree
  assert trainer == engine.Trainer(compute_dtype=want)
  assert hash(trainer) == hash(engine.Trainer(compute_dtype=want))
  assert engine.Trainer().compute_dtype == want  # 'auto' is the default
  for name in ("float32", "bfloat16"):
    assert engine.Trainer(compute_dtype=name).compute_dtype == name  # forced stays forced
  with pytest.raises(ValueError, match=r"compute_dtype must be one of \('auto', "):
    engine.resolve_compute_dtype("fp16")


def test_same_key_same_numbers_and_compiles_once(data):
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS)
  stacked = engine.stack_members(_members(labels, [dict(base_lr=0.01), dict(base_lr=0.02)]))
  before = engine.TRACE_COUNT["train_chunk"]
  results = []
  for _ in range(2):
    state = engine.init_population(trainer, stacked)
    for _ in range(3):  # three chunks of one shape: one trace
      state, _ = engine.train_chunk(trainer, state, stacked, data, 4)
    results.append(state.params)
  assert engine.TRACE_COUNT["train_chunk"] - before <= 1
  _assert_tree_close(results[0], results[1], rtol=0, atol=0)


def test_phase2_freezes_all_but_output_layers_bit_exactly(data):
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS)
  phase1 = engine.stack_members(_members(labels, [dict(base_lr=0.05)] * 2))
  state = engine.init_population(trainer, phase1)
  state, _ = engine.train_chunk(trainer, state, phase1, data, 5)
  before = jax.tree.map(np.asarray, state.params)
  phase2 = engine.stack_members(_members(labels, [dict(base_lr=0.005, output_only=True)] * 2))
  state2 = engine.restart(trainer, state, phase2)
  np.testing.assert_allclose(state2.opt_state.hyperparams["base_lr"], [0.005, 0.005])
  masked = jax.tree.map(jnp.copy, engine.restart(trainer, state, phase2))  # not donated
  assert engine.loop.all_output_only(phase2)
  state2, _ = engine.train_chunk(trainer, state2, phase2, data, 5)  # no frozen backward
  after = jax.tree.map(np.asarray, state2.params)
  # The full backward pass with the frozen layers' updates masked: the same parameters.
  masked, _ = engine.train_chunk(trainer, masked, phase2, data, 5, outputs_only=False)
  for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(masked.params)):
    np.testing.assert_array_equal(x, np.asarray(y))
  # The output layers' momentum is the masked path's; the frozen layers' (never
  # applied) stays as `restart` left it, zero, without the full backward pass.
  trace, masked_trace = (s.opt_state.inner_state[2].trace for s in (state2, masked))
  for layer in trace:
    moved = any(np.any(np.asarray(v) != 0) for v in jax.tree.leaves(trace[layer]))
    assert moved == (layer in trainer.output_layers), layer
    if layer in trainer.output_layers:
      for x, y in zip(jax.tree.leaves(trace[layer]), jax.tree.leaves(masked_trace[layer])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for layer in before:
    for name in before[layer]:
      same = np.array_equal(before[layer][name].view(np.uint32),
                            after[layer][name].view(np.uint32))
      if layer in trainer.output_layers:
        assert not same, f"output layer {layer}/{name} did not train"
      else:
        assert same, f"frozen layer {layer}/{name} changed"


def _matmuls(jaxpr) -> int:
  """dot_general and conv ops in a jaxpr, its sub-jaxprs (scan, pjit, custom_vjp) included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name in ("dot_general", "conv_general_dilated")
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          n += _matmuls(sub)
  return n


@pytest.mark.parametrize("impl", ["im2col", "banded", "winograd", "xla"])
def test_outputs_only_step_has_no_backward_pass_through_frozen_layers(data, impl):
  # LeNet-5's one output layer ('fc2'): an outputs-only step is the forward pass plus
  # that layer's kernel gradient, one matmul; the full step has the whole backward pass.
  # (Until 2026-12-02 stop_gradient was applied outside `value_and_grad`, where it cuts
  # nothing: both steps had the full backward pass.)
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS, conv_impl=impl)
  member = jax.tree.map(jnp.asarray, _members(labels, [dict(base_lr=0.1,
                                                            output_only=True)])[0])
  state = jax.tree.map(lambda a: a[0], engine.init_population(
      trainer, engine.stack_members([member])))
  step = {oo: _matmuls(jax.make_jaxpr(lambda s, m, oo=oo: engine.train_step(
      trainer, s, m, data, outputs_only=oo))(state, member).jaxpr) for oo in (False, True)}
  forward = _matmuls(jax.make_jaxpr(lambda p, x: trainer.module().apply(
      {"params": p}, x, train=False))(state.params, data.images[:B]).jaxpr)
  assert step[True] == forward + 1, (impl, forward, step)
  assert step[False] > step[True] + 2, (impl, forward, step)


def test_diverging_model_is_flagged_and_does_not_poison_neighbours(data):
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS)
  good = _members(labels, [dict(base_lr=0.01), dict(base_lr=0.02)])
  bad = _members(labels, [dict(base_lr=1e8)])[0]
  with_bad = engine.stack_members([good[0], bad, good[1]])
  without = engine.stack_members(good)
  s1 = engine.init_population(trainer, with_bad)
  s1, m1 = engine.train_chunk(trainer, s1, with_bad, data, STEPS)
  s2 = engine.init_population(trainer, without)
  s2, _ = engine.train_chunk(trainer, s2, without, data, STEPS)
  np.testing.assert_array_equal(np.asarray(s1.diverged), [False, True, False])
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(s1.params))
  for i, j in [(0, 0), (2, 1)]:
    _assert_tree_close(jax.tree.map(lambda x: x[i], s1.params),
                       jax.tree.map(lambda x: x[j], s2.params), rtol=1e-6, atol=1e-7)


def test_fit_checkpoints_and_resumes(data, tmp_path):
  labels = np.asarray(data.labels)
  trainer = engine.Trainer(batch_size=B, total_steps=STEPS)
  members = engine.stack_members(_members(labels, [dict(base_lr=0.01), dict(base_lr=0.03)]))
  full = engine.fit(trainer, engine.init_population(trainer, members), members, data,
                 num_steps=8, chunk_steps=4)
  ckpt = tmp_path / "ckpt"
  # A run that "dies" after its first checkpoint at step 4 ...
  engine.fit(trainer, engine.init_population(trainer, members), members, data, num_steps=4,
          chunk_steps=4, checkpoint_dir=ckpt, checkpoint_every=4)
  # ... and a rerun that restores it and finishes.
  seen = []
  resumed = engine.fit(trainer, engine.init_population(trainer, members), members, data,
                    num_steps=8, chunk_steps=4, checkpoint_dir=ckpt, checkpoint_every=4,
                    on_chunk=lambda s, m, st: seen.append(s))
  assert seen == [8]
  _assert_tree_close(resumed.params, full.params, rtol=1e-6, atol=1e-7)


def _run_worker(args, env_extra, timeout=300):
  env = dict(os.environ, **env_extra)
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.Popen([sys.executable, str(ROOT / "tests" / "engine_worker.py"),
                           *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _check(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out


def test_sharded_over_four_devices_equals_one_device(tmp_path):
  out = tmp_path / "r.npz"
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  _check(_run_worker([str(out)], {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}))
  r = np.load(out)
  assert int(r["num_devices"]) == 4
  assert int(r["sharded/collectives"]) == 0
  assert int(r["sharded/fit_compiles"]) == 1
  # Each device runs the one-device program on its own models (shard_map, one model
  # per block on CPU): the same numbers, bit for bit.
  for k in r.files:
    if k.startswith("sharded/"):
      np.testing.assert_array_equal(r[k], r["single/" + k[len("sharded/"):]], err_msg=k)


def test_two_processes_with_jax_distributed(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  ref = tmp_path / "ref.npz"
  _check(_run_worker([str(ref), "--single-only"], {"JAX_PLATFORMS": "cpu"}))
  out = tmp_path / "dist.npz"
  env = {"JAX_PLATFORMS": "cpu"}
  procs = [_run_worker([str(out), "--distributed", str(port), "2", str(i)], env)
           for i in range(2)]
  for p in procs:
    _check(p)
  r, single = np.load(out), np.load(ref)
  assert int(r["num_devices"]) == 2
  for k in r.files:
    if k.startswith("sharded/") and k != "sharded/logits":
      np.testing.assert_array_equal(r[k], single["single/" + k[len("sharded/"):]],
                                    err_msg=k)
  # `predict` vmaps each device's models at once (2 per device here, 3 in one process):
  # other matmul shapes, other rounding.
  np.testing.assert_allclose(r["sharded/logits"], single["single/logits"], rtol=2e-5,
                             atol=2e-6)


@pytest.mark.parametrize("model,shape", [("lenet5", (28, 28, 1)), ("allcnn", (32, 32, 3)),
                                         ("resnet10", (32, 32, 3))])
def test_cpu_init_options_keep_the_states(model, shape, monkeypatch):
  """`init_population` on CPU compiles at LLVM -O1 (`CPU_INIT_OPTIONS`) to save seconds
  of compile: its states equal those of XLA's default -O2, bit for bit, for every
  registered network (the suite's XLA_FLAGS, -O0, are overridden per compile here)."""
  from imbjax.engine import step
  trainer = engine.Trainer(model=model, batch_size=B, total_steps=STEPS, input_shape=shape)
  members = engine.stack_members([engine.make_member(jax.random.key(7 + i), np.arange(30), C,
                                                     base_lr=0.01) for i in range(2)])
  lowered = step._init_population_jit.lower(trainer, members)
  default = lowered.compile(compiler_options={"xla_backend_optimization_level": 2})(members)
  fast = lowered.compile(compiler_options=step.CPU_INIT_OPTIONS)(members)
  for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(fast), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The public function takes the -O1 program on CPU when XLA_FLAGS leave the level open,
  # and the flags' own level otherwise.
  calls = []
  for name in ("_init_population_jit", "_init_population_cpu_jit"):
    monkeypatch.setattr(step, name, lambda t, m, name=name: calls.append(name))
  monkeypatch.setenv("XLA_FLAGS", "")
  engine.init_population(trainer, members)
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  engine.init_population(trainer, members)
  assert calls == ["_init_population_cpu_jit", "_init_population_jit"]
