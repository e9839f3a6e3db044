"""LeNet-5 evaluation speed on CPU against the per-model evaluation batch.

`engine.predict` of 4 freshly initialised LeNet-5s on 1,000 random 28x28 images, one
XLA device, best of 3 rounds per batch size, and whether the logits equal (bit for bit)
those of batch 1,000 (the studies' default `eval_batch_size`).

  python -m benchmarks.eval_batch
"""
import time, jax, jax.numpy as jnp, numpy as np
from imbjax import engine
labels = np.arange(600) % 10
trainer = engine.Trainer(batch_size=32, total_steps=240)
members = engine.stack_members([engine.make_member(jax.random.key(i), np.arange(600), 10, plan_labels=labels, base_lr=0.01) for i in range(4)])
state = engine.init_population(trainer, members)
images = jnp.asarray(np.random.default_rng(0).random((1000, 28, 28, 1), dtype=np.float32))
out = {}
for bs in [1000, 500, 250, 125, 100, 50]:
  l = engine.predict(trainer, state, images, batch_size=bs); l.block_until_ready()
  ts = []
  for r in range(3):
    t = time.perf_counter(); l = engine.predict(trainer, state, images, batch_size=bs); l.block_until_ready(); ts.append(time.perf_counter() - t)
  out[bs] = np.asarray(l)
  print("eval_batch_size", bs, "examples/s", round(4000 / min(ts)), "equal to 1000:", np.array_equal(out[bs], out[1000]), float(np.abs(out[bs]-out[1000]).max()))
