"""Tests for imbjax.figures: PNGs that are not blank, tables equal to numpy means."""

import math
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from matplotlib import image as mpl_image

from imbjax import figures
from imbjax.store import ResultsStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_CLASSES = 10


def test_tables_state_what_the_selection_collapsed():
  rng = np.random.default_rng(2)
  a = _row(rng, "a", profile="step", rho=10, k=2, method="baseline", rep=0)
  assert figures.selection_note([a]) is None
  assert "best of" not in figures.summary_table([a], "auc")
  search = [dict(a, run_key=f"{lr}{rep}{wd}", base_lr=lr, lr_repeat=rep, weight_decay=wd)
            for lr in (0.01, 0.1) for rep in (0, 1) for wd in (1e-4, 5e-4)]
  note = figures.selection_note(search)
  assert "k = 8 runs (2 base_lr × 2 lr_repeat × 2 weight_decay) by AUC on test" in note
  assert "1 slots searched" in note
  table = figures.summary_table(search, "accuracy")
  assert f"_{note}_" in table
  val = [dict(r, val_auc=0.9) for r in search]
  assert "by AUC on validation;" in figures.selection_note(val)
  mixed = val + [dict(r, run_key=r["run_key"] + "x", repetition=1) for r in search]
  assert ("on validation in 1 slots and on test in 1"
          in figures.selection_note(mixed))
  # Another data seed is another subset draw, not one more candidate.
  seeds = [dict(a, data_seed=1), dict(a, run_key="b", data_seed=2)]
  assert len(figures.select_best(seeds)) == 2 and figures.selection_note(seeds) is None


def _row(rng, key, *, profile, rho, k, method, rep, ratio=1.0, base_lr=0.01,
         status="ok", curves=False):
  mu = k / N_CLASSES if profile == "step" else None
  extra = {}
  if curves:
    extra = {"curve_steps": [0, 50, 100],
             "train_acc": rng.uniform(0.1, 1.0, 3).tolist()}
    if curves == "test":
      extra["test_acc"] = rng.uniform(0.1, 1.0, 3).tolist()
  nan = float("nan")
  return dict(
      run_key=key, group_id="g", dataset="digits", model="lenet5", profile=profile,
      rho=float(rho), mu=mu, num_minority=k if profile == "step" else None,
      minority_classes=list(range(k)) if profile == "step" else [],
      class_counts=[100] * N_CLASSES, repetition=rep, seed=rep, method=method,
      resample_ratio=float(ratio), base_lr=base_lr, lr_repeat=0, iterations=100,
      batch_size=16,
      auc=float(rng.uniform(0.8, 0.99)) if status == "ok" else nan,
      accuracy=float(rng.uniform(0.5, 0.95)) if status == "ok" else nan,
      thresholded_accuracy=float(rng.uniform(0.5, 0.95)) if status == "ok" else nan,
      balanced_accuracy=0.5, per_class_recall=[0.5] * N_CLASSES, val_auc=None,
      status=status, wall_time_s=1.0, extra=extra)


def synthetic_rows(seed=0):
  """A small study: methods x rho x minority counts x 2 repetitions, plus extras."""
  rng = np.random.default_rng(seed)
  rows = []

  def add(**kw):
    rows.append(_row(rng, f"r{len(rows)}", **kw))

  step_methods = ["baseline", "oversampling", "undersampling", "two_phase_oversampling",
                  "thresholding", "oversampling_thresholding", "focal_loss"]
  for rho in (10, 100):
    for k in (2, 5):
      for m in step_methods:
        for rep in (0, 1):
          if (m, rho, k, rep) == ("undersampling", 100, 5, 1):
            add(profile="step", rho=rho, k=k, method=m, rep=rep,
                status="diverged")
            continue
          add(profile="step", rho=rho, k=k, method=m, rep=rep,
              curves="test" if m != "focal_loss" else "train")
          if (m, rho, k) == ("oversampling", 10, 2):  # an LR search: 2 runs
            add(profile="step", rho=rho, k=k, method=m, rep=rep, base_lr=0.1)
    for m in ("baseline", "oversampling", "undersampling"):
      for rep in (0, 1):
        add(profile="linear", rho=rho, k=0, method=m, rep=rep)
  for k in (2, 5):
    for m in ("oversampling", "undersampling"):
      for ratio in (10, 3):
        for rep in (0, 1):
          add(profile="step", rho=100, k=k, method=m, rep=rep, ratio=ratio)
  for rep in (0, 1):
    add(profile="balanced", rho=1, k=0, method="baseline", rep=rep)
  return rows


def expected_cells(rows, metric):
  """(method label, case label) -> (mean*100, std*100, n): an independent reduction."""
  thresholded = {"thresholding", "oversampling_thresholding"}
  slots = defaultdict(list)
  for r in rows:
    method = r["method"]
    if r["resample_ratio"] != 1.0:
      method = f"{method} (to ratio {r['resample_ratio']:g})"
    if r["profile"] == "step":
      case = f"step ρ={r['rho']:g} μ={r['mu']:g}"
    elif r["profile"] == "linear":
      case = f"linear ρ={r['rho']:g}"
    else:
      case = "balanced"
    slots[(method, case, r["repetition"])].append(r)
  values = defaultdict(list)
  for (method, case, _), cands in slots.items():
    best = max(cands, key=lambda r: -1 if math.isnan(r["auc"]) else r["auc"])
    if metric == "auc":
      if method not in thresholded:
        values[(method, case)].append(best["auc"])
    else:
      col = "thresholded_accuracy" if method in thresholded else "accuracy"
      values[(method, case)].append(best[col])
  out = {}
  for key, v in values.items():
    v = np.array(v) * 100
    v = v[np.isfinite(v)]
    out[key] = (v.mean(), v.std(ddof=1) if v.size > 1 else 0.0, v.size)
  return out


def parse_table(md, heading):
  """The first Markdown table after ``heading`` as {(method, column): cell}."""
  lines = md[md.index(heading):].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  block = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    block.append([c.strip() for c in line.strip().strip("|").split("|")])
  header, body = block[0], block[2:]
  return {(t[0], col): cell for t in body for col, cell in zip(header[1:], t[1:]) if cell}


CELL = re.compile(r"^(-?[\d.]+)(?: ± ([\d.]+))? \((\d+)(?:, (\d+) diverged)?\)$")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  rows = synthetic_rows()
  with ResultsStore(workdir) as st:
    st.write_group(rows)
  return workdir, rows, figures.make_all(workdir)


def test_make_all_writes_every_figure(study):
  workdir, _, paths = study
  names = sorted(p.name for p in paths)
  assert names == sorted([
      "fig3_step_auc_digits_lenet5.png", "fig4_step_auc_by_minority_digits_lenet5.png",
      "fig5_linear_auc_digits_lenet5.png", "fig6_step_accuracy_digits_lenet5.png",
      "fig7_partial_digits_lenet5_rho100.png",
      # The curve case nearest the paper's (ρ=50, half the classes minority).
      "fig8_curves_digits_lenet5_step_rho100_m5.png", "tables.md",
      # Beyond the paper: every step case holding a non-paper method (focal_loss).
      *[f"fig9_methods_digits_lenet5_step_{rho}_{k / N_CLASSES:g}.png"
        for rho in (10, 100) for k in (2, 5)]])
  assert all(p.parent == workdir / "figures" for p in paths)
  for p in paths:
    if p.suffix == ".png":
      assert p.read_bytes()[:8] == PNG_MAGIC, p
      pixels = mpl_image.imread(p)
      assert pixels.ndim == 3 and pixels[..., :3].var() > 1e-3, p  # not blank


@pytest.mark.parametrize("metric, heading", [
    ("auc", "## Multi-class ROC AUC"), ("accuracy", "## Accuracy")])
def test_tables_equal_numpy_means(study, metric, heading):
  workdir, rows, _ = study
  md = (workdir / "figures" / "tables.md").read_text()
  cells = parse_table(md, heading)
  want = expected_cells(rows, metric)
  assert set(cells) == set(want)
  for key, (mean, std, n) in want.items():
    m = CELL.match(cells[key])
    assert m, cells[key]
    assert float(m.group(1)) == pytest.approx(mean, abs=0.006), key
    assert float(m.group(2) or 0.0) == pytest.approx(std, abs=0.006), key
    assert int(m.group(3)) == n, key
  # The LR search kept the better of two runs; the diverged run is counted apart.
  assert cells[("undersampling", "step ρ=100 μ=0.5")].endswith("(1, 1 diverged)")
  methods = {m for m, _ in cells}
  if metric == "auc":
    assert not any(figures.is_thresholded(m) for m in methods)
  else:  # thresholded methods read thresholded_accuracy, and only for accuracy
    assert {"thresholding", "oversampling_thresholding"} <= methods
    assert "undersampling_thresholding" not in methods  # nothing is derived


def test_summary_table_matches_file_and_refuses_unknown_metric(study):
  workdir, rows, _ = study
  md = (workdir / "figures" / "tables.md").read_text()
  assert figures.summary_table(rows, "auc") in md
  with pytest.raises(ValueError, match="'f1'.*'auc'"):
    figures.summary_table(rows, "f1")


def test_select_best_prefers_val_auc_then_auc():
  rng = np.random.default_rng(1)
  a = _row(rng, "a", profile="step", rho=10, k=2, method="baseline", rep=0)
  b = dict(a, run_key="b", base_lr=0.1, auc=a["auc"] + 0.01)
  assert [r["run_key"] for r in figures.select_best([a, b])] == ["b"]
  a2, b2 = dict(a, val_auc=0.9), dict(b, val_auc=0.8)
  assert [r["run_key"] for r in figures.select_best([a2, b2])] == ["a"]
  d = dict(a, run_key="d", status="diverged", auc=float("nan"))
  assert [r["run_key"] for r in figures.select_best([d, a])] == ["a"]
  other_rep = dict(a, run_key="c", repetition=1)
  assert len(figures.select_best([a, b, other_rep])) == 2


def test_curve_case_nearest_the_paper():
  rng = np.random.default_rng(4)
  rows = [_row(rng, f"{rho}-{k}", profile="step", rho=rho, k=k, method="baseline",
               rep=0, curves="test") for rho in (10, 40, 1000) for k in (1, 4, 9)]
  assert figures.curve_case(rows) == ("step", 40.0, 4)
  linear = [_row(rng, f"l{rho}", profile="linear", rho=rho, k=0, method="baseline",
                 rep=0) for rho in (100, 10)]
  assert figures.curve_case(linear) == ("linear", 10.0, 0)
  assert figures.curve_case(linear + rows[:1]) == ("step", 10.0, 1)
  assert figures.curve_case([]) is None


def test_method_styles_fixed_and_extended():
  styles = figures.method_styles(["zeta_loss", "oversampling", "focal_loss"])
  assert styles["oversampling"] == figures.Style("tab:blue", "s")
  fixed_colors = {s.color for m, s in styles.items() if m in figures.METHOD_ORDER}
  assert styles["focal_loss"].color not in fixed_colors
  assert styles["focal_loss"].color != styles["zeta_loss"].color
  # Name order, not call order, decides: stable across figures.
  again = figures.method_styles(["focal_loss", "zeta_loss"])
  assert again["focal_loss"] == styles["focal_loss"]
  assert again["zeta_loss"] == styles["zeta_loss"]


def test_sparse_and_empty_stores(tmp_path):
  rng = np.random.default_rng(2)
  linear = tmp_path / "linear"
  with ResultsStore(linear) as st:
    st.write_group([_row(rng, "a", profile="linear", rho=10, k=0,
                         method="baseline", rep=0)])
  names = [p.name for p in figures.make_all(linear)]
  assert names == ["fig5_linear_auc_digits_lenet5.png", "tables.md"]

  diverged = tmp_path / "diverged"
  with ResultsStore(diverged) as st:
    st.write_group([_row(rng, "a", profile="step", rho=10, k=2, method="baseline",
                         rep=0, status="diverged")])
  paths = figures.make_all(diverged)
  assert [p.name for p in paths] == ["tables.md"]
  assert "– (0, 1 diverged)" in paths[0].read_text()

  empty = tmp_path / "empty"
  ResultsStore(empty).close()
  (tables,) = figures.make_all(empty)
  assert "_no results_" in tables.read_text()
  with pytest.raises(ValueError, match="nowhere"):
    figures.make_all(tmp_path / "nowhere")


def test_binary_prints_paths_and_tables(tmp_path):
  rng = np.random.default_rng(3)
  with ResultsStore(tmp_path) as st:
    st.write_group([_row(rng, "a", profile="linear", rho=10, k=0,
                         method="baseline", rep=0)])
  out = subprocess.run([sys.executable, "-m", "experiments.figures",
                        f"--workdir={tmp_path}"], capture_output=True, text=True,
                       check=True).stdout
  assert str(tmp_path / "figures" / "tables.md") in out
  assert "| baseline |" in out


def test_table_by_repetition_gives_each_run_of_a_case_its_own_column():
  rng = np.random.default_rng(5)
  rows = [_row(rng, f"{m}{rep}", profile="step", rho=100, k=9, method=m, rep=rep)
          for m in ("baseline", "oversampling") for rep in range(3)]
  table = figures.summary_table(rows, "auc", by_repetition=True)
  header = next(line for line in table.splitlines() if line.startswith("| method"))
  assert header.count("run ") == 3 and "run 3" in header
  base = next(line for line in table.splitlines() if line.startswith("| baseline"))
  cells = [c.strip() for c in base.split("|")[2:-1]]
  want = [f"{r['auc'] * 100:.2f} (1)" for r in rows[:3]]
  assert cells == want
  # Pooled, the same runs are one column with n = 3.
  pooled = figures.summary_table(rows, "auc")
  assert "(3)" in pooled and "run 1" not in pooled
