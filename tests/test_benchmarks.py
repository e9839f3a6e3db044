"""benchmarks/population_throughput.py runs end to end in quick mode (never asserts speed)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from benchmarks import population_throughput as bench


def test_flop_count_matches_paper_network():
  # Forward MACs per image, by hand: conv1 24*24*20*25 = 288,000; conv2 8*8*50*500 =
  # 1,600,000; fc1 800*500 = 400,000; fc2 500*10 = 5,000 -> 2,293,000; x2 x3 for training.
  assert bench.FLOP_PER_IMAGE == 6 * 2_293_000


def test_population_members_have_own_plans():
  labels = np.arange(40) % 10
  members = bench.make_population(3, labels)
  lens = np.asarray(members.plan_len)
  assert np.all((lens >= 20) & (lens <= 40)) and len(set(lens.tolist())) > 1
  assert members.plan.shape == (3, lens.max())  # padded to the longest plan
  for i in range(3):
    plan = np.asarray(members.plan[i, :lens[i]])
    assert len(set(plan.tolist())) == lens[i]             # a subset, no repeats
    assert np.all(np.diff(labels[plan]) >= 0)             # sorted by class
    np.testing.assert_array_equal(members.class_counts[i], np.bincount(labels[plan], minlength=10))


def test_memory_fit_recovers_a_line():
  rows = [{"P": p, "bytes_total": 1000 + 300 * p} for p in (1, 4, 16)]
  fit = bench._fit_memory(rows, budget_bytes=10_000)
  assert fit["bytes_per_model"] == pytest.approx(300)
  assert fit["bytes_shared"] == pytest.approx(1000)
  assert fit["max_population_in_budget"] == 30  # (10000 - 1000) // 300


def test_quick_run_prints_table_and_json_last(capsys):
  result = bench.main(["--quick", "--reference", "jax"])
  lines = capsys.readouterr().out.strip().splitlines()
  last = json.loads(lines[-1])
  assert last == json.loads(json.dumps(result))
  for key in ("images_per_s", "reference_images_per_s", "ratio", "peak_gflops",
              "bytes_per_model", "max_population_in_budget"):
    assert key in last and last[key] is not None
  assert last["P"] == 4 and set(last["per_p"]) == {"1", "4"}
  # The ratio is the median over rounds of the paired ratio (2 rounds: their mean).
  rounds = last["rounds"]
  assert len(rounds["reference"]) == len(rounds["4"]) == 2
  assert last["reference_images_per_s"] == max(rounds["reference"])
  assert last["images_per_s"] == pytest.approx(max(rounds["4"]), rel=1e-3)
  assert last["ratio"] == pytest.approx(
      np.median(np.array(rounds["4"]) / np.array(rounds["reference"])), rel=1e-2)
  assert last["bytes_per_model"] > 4 * 431_080 * 2  # at least params + momentum in float32
  rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["4"])]
  assert len(rows) == 2  # one table row per P


def test_default_run_shards_over_one_device_per_core():
  # The plain command's own process: JAX must not have started before the devices are set.
  import os
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  # No device-count flag of the suite's; its -O0 kept (compiles 156 -> 45 s, AVX2 EPYC).
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.population_throughput", "--populations=3",
       "--steps=2", "--repeats=1", "--warmup=0", "--train-size=256", "--reference=jax"],
      cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = json.loads(proc.stdout.strip().splitlines()[-1])
  assert last["devices"] == (os.cpu_count() or 1)
  assert "--xla_cpu_multi_thread_eigen=false" in proc.stdout.splitlines()[0]
  assert set(last["per_p"]) == {"3"}  # 3 models padded to the devices, 3 counted


def test_bad_population_flag_is_refused():
  with pytest.raises(ValueError, match="populations"):
    bench.main(["--populations", "0"])
  with pytest.raises(ValueError, match=r"--repeats and --steps must be >= 1 and --warmup "
                     r">= 0, got 0, 50 and 1"):
    bench.main(["--repeats", "0"])
  with pytest.raises(ValueError, match=r"got 3, 50 and -1"):
    bench.main(["--warmup", "-1"])


def test_gpu_device_check_script_runs_on_cpu(capsys, tmp_path):
  """The script a short device lease runs must not fail there for a Python reason."""
  from benchmarks import gpu_population
  md = tmp_path / "gpu.md"
  out = gpu_population.main(["--sizes=1,2", "--impls=banded", "--steps=2",
                             "--model-block=1", "--train-size=256",
                             "--dtypes=float32,bfloat16", "--markdown", str(md)])
  section = md.read_text()
  assert "python -m benchmarks.gpu_population --sizes=1,2 --impls=banded" in section
  assert "--markdown" not in section and str(md) not in section
  rows = [line for line in section.splitlines() if line.startswith("| banded |")]
  assert len(rows) == 4 and rows[2].startswith("| banded | bfloat16 | 1 | 1 |")
  assert f"{out['results'][0]['images_per_s']:,.0f}" in rows[0]
  assert [(r["impl"], r["P"], r["model_block"], r["dtype"]) for r in out["results"]] == [
      ("banded", 1, 1, "float32"), ("banded", 2, 1, "float32"),
      ("banded", 1, 1, "bfloat16"), ("banded", 2, 1, "bfloat16")]
  for r in out["results"]:
    assert r["images_per_s"] > 0
    assert r["paper_mnist_study_hours"] == pytest.approx(
        gpu_population.PAPER_NETWORKS * gpu_population.PAPER_ITERATIONS
        * gpu_population.BATCH / r["images_per_s"] / 3600)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out


def test_gpu_device_check_records_a_failing_configuration_and_goes_on(tmp_path):
  """One configuration that raises (here a lowering name nobody accepts; on a lease, an
  out-of-memory P) is recorded with its error, and the other rows still come back."""
  from benchmarks import gpu_population
  md = tmp_path / "gpu.md"
  out = gpu_population.main(["--sizes=1", "--impls=nope,im2col", "--steps=1",
                             "--train-size=128", "--markdown", str(md)])
  bad, good = out["results"]
  assert bad["impl"] == "nope" and "nope" in bad["error"] and "im2col" in bad["error"]
  assert "error" not in good and good["images_per_s"] > 0 and out["best"] == good
  rows = [line for line in md.read_text().splitlines() if line.startswith("| nope |")]
  assert len(rows) == 1 and "failed: ValueError" in rows[0]


def test_phase_clock_takes_compile_spans_out_of_their_phase():
  from benchmarks import study_throughput as st
  clock = st.PhaseClock(100.0)
  clock.segments = [(100.0, 104.0, "other"), (104.0, 110.0, "training")]
  clock.mark = 110.0
  clock.spans = [(105.0, 107.0, st.COMPILE_EVENTS[0], "f"),   # trace, nested in ...
                 (105.5, 106.0, st.COMPILE_EVENTS[0], "g"),   # ... counted once
                 (107.0, 108.0, st.BACKEND_COMPILE, "f"), (103.0, 104.5, st.BACKEND_COMPILE, "h")]
  phases, by_phase, funcs = clock.totals(110.0)
  assert phases == pytest.approx({"other": 3.0, "training": 2.5, "compile": 4.5})
  assert by_phase == pytest.approx({"other": 1.0, "training": 3.5})
  assert funcs == {"f": [1, 1.0], "h": [1, 1.5]}
  assert sum(phases.values()) == pytest.approx(10.0)


def test_study_quick_run_splits_the_wall_time(capsys):
  from benchmarks import study_throughput as st
  result = st.main(["--quick", "--quiet"])
  last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert last == json.loads(json.dumps(result))
  for key in ("wall_s", "phases", "compiles", "compiled_functions", "training_images",
              "end_to_end_images_per_s", "training_images_per_s", "step_images_per_s",
              "ratio_end_to_end_vs_step", "ratio_training_vs_step", "rows", "models"):
    assert key in last and last[key] is not None, key
  phases = last["phases"]
  for name in ("config", "data", "training", "compile", "evaluation", "curves", "scoring",
               "store", "figures", "report", "other"):
    assert name in phases and phases[name] >= 0, name
  assert phases["training"] > 0 and phases["compile"] > 0 and phases["data"] > 0
  assert sum(phases.values()) <= last["wall_s"] + 1e-3
  assert last["compiles"] >= 2 and last["trace_count"]["train_chunk"] >= 1
  assert any("train_chunk" in name for name in last["compiled_functions"])
  # The ratios come from the measured numbers.
  assert last["models"] == 1 and last["rows"] == 2 and last["iterations"] == 6
  assert last["training_images"] == 1 * 6 * last["batch_size"]
  assert last["end_to_end_images_per_s"] == pytest.approx(
      last["training_images"] / last["wall_s"], rel=1e-3, abs=1e-3)
  assert last["step_images_per_s"] == max(last["step_rounds"])
  assert last["ratio_end_to_end_vs_step"] == pytest.approx(
      last["end_to_end_images_per_s"] / last["step_images_per_s"], rel=1e-2)
  if "torch_study_s" in last:  # the bench extra is installed
    assert last["ratio_vs_torch"] == pytest.approx(last["torch_study_s"] / last["wall_s"],
                                                   rel=1e-2)
    per = last["torch_per_phase"]["1"]
    assert per["models"] == 1 and per["sampled"] == 1 and per["mean_model_s"] > 0
    assert last["torch_study_s"] == pytest.approx(
        last["torch_import_s"] + per["mean_model_s"], abs=2e-3)


def test_torch_mirrors_have_the_flax_parameter_counts():
  pytest.importorskip("torch")
  import jax
  import jax.numpy as jnp
  from benchmarks import population_throughput as pt
  from benchmarks import torch_models
  from imbjax import models
  for name, classes, shape in (("lenet5", 10, (28, 28, 1)), ("allcnn", 10, (32, 32, 3)),
                               ("resnet10", 1000, (64, 64, 3))):
    net = models.get(name, num_classes=classes, conv_impl="xla")
    variables = jax.eval_shape(lambda: net.init(  # pylint: disable=cell-var-from-loop
        {"params": jax.random.key(0), "dropout": jax.random.key(1)},
        jnp.zeros((1, *shape))))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    flax_counts = (count(variables["params"]), count(variables.get("batch_stats", {})))
    assert torch_models.count_params(torch_models.make(name, classes, shape)) == flax_counts
  assert flax_counts == (5_418_792, 5_760)  # resnet.py's docstring
  # The MAC count by hooks reproduces LeNet-5's by hand.
  assert pt.flop_per_image("lenet5", (28, 28, 1), 10) == pt.FLOP_PER_IMAGE
  net = torch_models.make("lenet5", 10, (28, 28, 1))
  assert 6 * torch_models.forward_macs(net, (28, 28, 1)) == pt.FLOP_PER_IMAGE


def test_quick_run_reports_each_lowering_and_picks_the_best(capsys):
  from benchmarks import population_throughput as pt
  result = pt.main(["--quick", "--impls", "im2col,banded", "--populations", "2",
                    "--steps", "1", "--repeats", "1", "--reference", "jax"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
      json.dumps(result))
  assert set(result["per_impl"]) == {"im2col", "banded"} and result["model"] == "lenet5"
  best = max(("im2col", "banded"), key=lambda i: result["per_impl"][i]["images_per_s"])
  assert result["best_impl"] == result["conv_impl"] == best
  assert result["images_per_s"] == result["per_impl"][best]["images_per_s"]
  for impl in ("im2col", "banded"):
    per = result["per_impl"][impl]
    assert set(per["per_p"]) == {"2"} and per["P"] == 2
    assert per["ratio"] == pytest.approx(per["rounds"]["2"][0]
                                         / result["rounds"]["reference"][0], rel=1e-2)


def test_quick_run_of_all_cnn(capsys):
  from benchmarks import population_throughput as pt
  result = pt.main(["--quick", "--model", "allcnn", "--impls", "im2col",
                    "--populations", "1", "--steps", "1", "--repeats", "1",
                    "--reference", "jax", "--batch", "4", "--train-size", "64"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
      json.dumps(result))
  assert result["model"] == "allcnn" and result["best_impl"] == "im2col"
  assert result["batch"] == 4 and result["input_shape"] == [32, 32, 3]
  assert result["images_per_s"] > 0 and result["per_p"] == {"1": result["images_per_s"]}
  if importlib.util.find_spec("torch") is not None:
    # 3 x 2 x forward MACs of Table 3's All-CNN-C on 32x32x3 (torch_models' hooks).
    assert result["flop_per_image"] == 6 * 270_798_336


def test_paper_forecast_from_measured_lines(tmp_path):
  from benchmarks import paper_forecast as pf
  study = {"iterations": 10_000, "batch_size": 64, "models": 2048, "wall_s": 500.0,
           "phases": {"startup": 8.0, "data": 2.0, "training": 400.0},
           "training_images": 2048 * 640_000, "training_images_per_s": 2048 * 1600.0,
           "step_images_per_s": 4.0e6}
  allcnn = {"images_per_s": 60_000.0, "P": 32, "best_impl": "im2col", "batch": 256}
  (tmp_path / "study.log").write_text("# noise\n" + json.dumps(study) + "\n")
  (tmp_path / "allcnn.log").write_text(json.dumps(allcnn) + "\n# trailing comment\n")
  out = pf.main(["--study", str(tmp_path / "study.log"),
                 "--allcnn", str(tmp_path / "allcnn.log")])
  assert out["mnist_groups"] == 11  # ceil(22,500 / 2,048)
  assert out["mnist_hours"] == pytest.approx((10 + 11 * 490) / 3600)
  assert out["mnist_step_only_hours"] == pytest.approx(22_500 * 640_000 / 4.0e6 / 3600)
  assert out["end_to_end_overhead"] == pytest.approx(500 / 400)
  cifar = 480 * 70_000 * 256 / 60_000 / 3600
  assert out["cifar10_training_only_hours"] == pytest.approx(cifar)
  assert out["cifar10_hours"] == pytest.approx(cifar * 1.25)
  assert "mnist_note" not in out and "cifar10_note" not in out


def test_study_ab_runs_each_variant_and_finds_no_change_in_the_rows(capsys):
  """The A/B of issue #18's changes on a two-phase quick study: every variant trained,
  its rows compared with the all-changes run (a change turned off must not move a
  stored number), the ratios from the measured walls."""
  from benchmarks import study_ab
  # shard_like is a no-op on this test's one device: its variant is left out.
  changes = ["outputs_only", "reuse_test_logits", "frozen_prefix"]
  # No figures, a 10-a-class curve sample: the rows compared are the same kind of rows,
  # at a quarter of the curves' evaluation (-O0).
  result = study_ab.main(["--quick", "--rounds", "1", "--changes", ",".join(changes),
                          "--set", "methods=('oversampling', 'two_phase_oversampling')",
                          "--set", "make_figures=False", "--set", "curve_train_per_class=10"])
  last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert last == json.loads(json.dumps(result))
  names = ["all"] + [f"without {c}" for c in changes]
  assert list(last["variants"]) == names
  base = last["variants"]["all"]["median_wall_s"]
  for name in names:
    v = last["variants"][name]
    assert len(v["runs"]) == 1 and v["runs"][0]["training"] > 0
    assert v["rows_differing"] == 0, name
    assert v["x_all"] == pytest.approx(v["median_wall_s"] / base, rel=1e-3)
  # Without the logits reuse, the test split is evaluated once more per phase.
  assert (last["variants"]["without reuse_test_logits"]["runs"][0]["evaluation"] >
          last["variants"]["all"]["runs"][0]["evaluation"])
  with pytest.raises(ValueError, match="unknown.*'nope'"):
    study_ab.main(["--quick", "--changes", "nope"])


def test_cifar10_balanced_lease_script_trains_stores_and_brings_back_its_run(tmp_path):
  """The prepared lease for the paper's balanced All-CNN run (DRY_RUN: CPU, 4 steps,
  a 10-class JPEG folder of 2 images a class): the sweep runs under the script's
  timeout, and $OUT holds its log and a store with the base rate's two runs."""
  import os
  import sqlite3
  import subprocess
  from PIL import Image
  from imbjax.datasets import cifar
  rng = np.random.default_rng(0)
  data = tmp_path / "cifar"
  for split in ("train", "test"):
    for c in cifar.CLASS_NAMES:
      (data / split / c).mkdir(parents=True)
      for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            data / split / c / f"{i:04d}.jpg")
  out = tmp_path / "out"
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, DRY_RUN="1", OUT=str(out), CIFAR_DIR=str(data),
             WORKDIR=str(tmp_path / "work"), PY="python", BUDGET_S="400")
  proc = subprocess.run(["bash", "benchmarks/gpu_cifar10_balanced.sh"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  log = (out / "log").read_text()
  assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
  assert "# sweep: exit 0 after" in log, log[-3000:]
  assert "--config.base_lrs=(0.05,)" in log
  with sqlite3.connect(out / "run" / "results.sqlite") as db:
    rows = db.execute("SELECT method, base_lr FROM runs").fetchall()
  assert sorted(rows) == [("baseline", 0.05), ("baseline", 0.05)]
  assert (out / "run" / "study_config.json").is_file()


def test_study_run_times_the_step_on_both_sides_and_compares_with_their_mean():
  from benchmarks import study_throughput as st
  last = st.main(["--quick", "--quiet", "--step-before", "1", "--torch-samples", "0"])
  before, after = last["step_before_images_per_s"], last["step_images_per_s"]
  assert before == max(last["step_before_rounds"]) > 0 and after > 0
  assert last["step_drift"] == pytest.approx(after / before, rel=1e-3)
  assert last["step_reference_images_per_s"] == pytest.approx((before + after) / 2, rel=1e-4)
  assert last["ratio_end_to_end_vs_step"] == pytest.approx(
      last["end_to_end_images_per_s"] / ((before + after) / 2), rel=1e-3)
  # The study's own wall and compiles exclude the rounds before it (caches cleared).
  assert sum(last["phases"].values()) <= last["wall_s"] + 1e-3
  assert any("train_chunk" in name for name in last["compiled_functions"])


def test_resnet_layers_lists_every_convolution_of_the_network_with_its_shape():
  import jax
  import jax.numpy as jnp
  from benchmarks import resnet_layers
  from imbjax import models
  net = models.get("resnet10", num_classes=10, conv_impl="im2col")
  shapes = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False),
                          jnp.zeros((1, 64, 64, 3)))["params"]
  kernels = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    if path[-1].key == "kernel" and leaf.ndim == 4:
      kernels[tuple(p.key for p in path[:-1])] = leaf.shape
  specs = resnet_layers.layers(64)
  assert len(specs) == len(kernels) == 12  # stem, 4 x 2 convolutions, 3 projections
  got = sorted((k, k, c_in, c_out) for _, _, c_in, c_out, k, _, _ in specs)
  assert got == sorted(kernels.values())
  sides = {name: side for name, side, *_ in specs}
  assert sides["stem 7x7/2"] == 64 and sides["stage1 conv1 3x3/1"] == 16
  assert sides["stage4 conv2 3x3/1"] == 2  # 64 -> 32 (stem) -> 16 (pool) -> 16, 8, 4, 2


def test_eval_batch_reports_speed_and_whether_the_logits_move(capsys):
  from benchmarks import eval_batch
  out = eval_batch.main(["--batches", "40,20", "--models", "2", "--examples", "40",
                         "--repeats", "1"])
  assert set(out) == {40, 20}
  assert out[40]["equal"] and out[40]["max_abs_diff"] == 0.0 and out[40]["ratio"] > 0
  assert out[20]["max_abs_diff"] < 1e-4  # another batch: the same logits to float rounding
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]).keys() == {"40", "20"}
  with pytest.raises(SystemExit, match="--batches must be positive"):
    eval_batch.main(["--batches", "0"])


def test_phase2_step_times_the_three_variants_and_checks_the_parameters(capsys):
  from benchmarks import phase2_step
  out = phase2_step.main(["--population", "2", "--steps", "2", "--repeats", "1",
                          "--examples", "64"])
  assert set(out["variants"]) == {"phase1", "phase2", "phase2_masked"}
  assert all(v["wall_ms"] > 0 and v["cpu_ms"] >= 0 for v in out["variants"].values())
  assert out["params_equal"] is True and out["masked_over_phase2"] > 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
  with pytest.raises(SystemExit, match="--population"):
    phase2_step.main(["--population", "0"])


def test_head_cache_check_compares_the_two_phase_2_paths(capsys):
  """The device-ready check of phase 2 from cached head inputs: on CPU both paths give
  the same bits, and it says so in its JSON, with both times."""
  from benchmarks import head_cache_check
  out = head_cache_check.main(["--quick"])
  assert out["bit_equal"] is True and out["max_abs_diff"] == 0.0
  assert out["models"] == 4 and out["steps"] == 6
  assert out["full_s"] > 0 and out["cached_s"] > 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out


def test_phase2_updates_ab_runs_both_ways_with_the_same_parameters(capsys):
  from benchmarks import phase2_updates_ab
  from imbjax.engine import step as step_lib
  out = phase2_updates_ab.main(["--quick", "--cpu-devices", "1"])
  assert out["params_equal"] is True
  assert len(out["skip"]["chunk_s"]) == len(out["compute"]["chunk_s"]) == 1
  assert step_lib._SKIP_FROZEN_UPDATES is True  # restored
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
