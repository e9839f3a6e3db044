import time, jax, jax.numpy as jnp, numpy as np
from imbjax import engine
labels = np.arange(600) % 10
members = engine.stack_members([
    engine.make_member(jax.random.key(i), np.arange(600), 10, plan_labels=labels,
                       base_lr=0.01) for i in range(4)])
images = jnp.asarray(np.random.default_rng(0).random((1000, 28, 28, 1), dtype=np.float32))
out, times = {}, {}
for mb in (None, 2, 4):
  tr = engine.Trainer(batch_size=32, total_steps=240, model_block=mb)
  state = engine.init_population(tr, members)
  out[mb] = np.asarray(engine.predict(tr, state, images, batch_size=1000))
  times[mb] = []
for r in range(3):
  for mb in (None, 2, 4):
    tr = engine.Trainer(batch_size=32, total_steps=240, model_block=mb)
    state = engine.init_population(tr, members)
    t = time.perf_counter(); engine.predict(tr, state, images, batch_size=1000).block_until_ready()
    times[mb].append(time.perf_counter() - t)
for mb in (None, 2, 4):
  print(mb, "equal", np.array_equal(out[mb], out[None]), "best s", min(times[mb]), 4000/min(times[mb]), "ex/s")
