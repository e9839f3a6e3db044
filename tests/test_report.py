"""The report of a real tiny study: files, JSON fields, and a page Chromium renders with
every image decoded."""

import base64
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments.configs import test as test_config
from imbjax import conclusions
from imbjax import report
from imbjax import study as study_lib

CHROMIUM = "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """A real tiny study (digits, one step case, 2 repetitions) and its report."""
  workdir = tmp_path_factory.mktemp("study")
  c = test_config.get_config()
  c.methods = ("baseline", "oversampling", "undersampling", "thresholding")
  c.population_size = 6
  study_lib.train_and_evaluate(c, workdir, log=lambda *_: None)
  paths = report.write_report(workdir, n_boot=1000)
  return workdir, paths


def _strict_json(text):
  def refuse(token):
    raise ValueError(f"non-strict JSON token {token}")
  return json.loads(text, parse_constant=refuse)


def test_report_files_and_json_fields(study):
  _, paths = study
  assert [p.name for p in paths] == ["report.html", "report.md", "report.json"]
  data = _strict_json(paths[2].read_text())
  comps = data["comparisons"]
  assert comps and {"case", "method", "reference", "metric", "n", "mean_diff", "ci_low",
                    "ci_high", "p_value"} <= set(comps[0])
  assert {c["metric"] for c in comps} == {"auc", "accuracy"}
  base = [c for c in comps if c["reference"] == "baseline"]
  assert {c["method"] for c in base if c["metric"] == "accuracy"} == {
      "oversampling", "undersampling", "thresholding"}
  assert all(c["n"] == 2 for c in base)  # two repetitions, one learning rate
  assert set(data["ranks"]) == {"auc", "accuracy"}
  assert set(data["ranks"]["auc"]) == {"baseline", "oversampling", "undersampling"}
  assert set(data["friedman"]["auc"]) >= {"statistic", "p_value"}
  assert [c["id"] for c in data["conclusions"]] == ["i", "ii", "iii", "iv", "v"]
  assert all(c["status"] in conclusions.STATUSES for c in data["conclusions"])
  assert data["config"]["fingerprint"]["dataset"] == "digits"
  assert data["study_config"]["methods"] == ["baseline", "oversampling", "undersampling",
                                             "thresholding"]
  assert {"python", "jax", "flax", "numpy", "scipy", "imbjax"} <= set(data["versions"])
  assert "select_best" in data["selection"]
  assert set(data["lr_sensitivity"]["auc"]["baseline"]) == {"0.01"}


def test_markdown_has_the_same_sections_as_html(study):
  _, (html_path, md_path, _) = study
  md, page = md_path.read_text(), html_path.read_text()
  headings = re.findall(r"^#{1,3} (.+)$", md, flags=re.MULTILINE)
  assert "The paper's conclusions, checked" in headings
  for h in headings:
    assert (h.replace("&", "&amp;").replace("'", "&#x27;").replace("<", "&lt;")
            .replace(">", "&gt;")) in page
  for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
    assert (md_path.parent / link).is_file()
  assert len(re.findall(r"!\[", md)) == len(DATA_URI.findall(page))


def test_every_embedded_image_decodes(study):
  _, (html_path, _, _) = study
  uris = DATA_URI.findall(html_path.read_text())
  assert len(uris) >= 3  # CD diagrams and the paper's figures
  for data in uris:
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    assert img.format == "PNG" and min(img.size) > 50
    assert np.asarray(img.convert("L")).std() > 5  # drawn, not blank


_CHECK_SCRIPT = """
<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  const div = document.createElement('div');
  div.id = 'imgcheck';
  div.textContent = 'IMGCHECK ' + imgs.length + ' ' + bad.length;
  document.body.appendChild(div);
});
</script>
"""


def _chromium(args, tmp_path):
  cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=5000", *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium; .ci/run installs it)")
def test_chromium_renders_the_report_with_every_image(study, tmp_path):
  _, (html_path, _, _) = study
  n_images = len(DATA_URI.findall(html_path.read_text()))
  probe = tmp_path / "probe.html"
  probe.write_text(html_path.read_text().replace("</body>", _CHECK_SCRIPT + "</body>"))
  out = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
  found = re.search(r"IMGCHECK (\d+) (\d+)", out.stdout)
  assert found, out.stderr[-2000:]
  assert (int(found.group(1)), int(found.group(2))) == (n_images, 0)
  shot = tmp_path / "report.png"
  out = _chromium([f"--screenshot={shot}", "--window-size=1200,2400",
                   html_path.as_uri()], tmp_path)
  assert shot.exists(), out.stderr[-2000:]
  img = np.asarray(Image.open(shot).convert("L"))
  assert img.shape == (2400, 1200) and img.std() > 10
  shutil.copy(shot, html_path.parent / "report_screenshot.png")


def test_report_binary(study, tmp_path):
  workdir, _ = study
  out = subprocess.run(
      [sys.executable, "-m", "experiments.report", f"--workdir={workdir}"], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "report.html" in out.stdout and "(v) " in out.stdout


def test_missing_store_is_refused(tmp_path):
  with pytest.raises(ValueError, match="results.sqlite"):
    report.write_report(tmp_path)


def test_a_weight_decay_search_is_stated_paired_and_shown(study):
  workdir, _ = study
  from imbjax import store as store_lib
  with store_lib.ResultsStore(workdir) as st:
    rows = st.rows()
  searched = rows + [dict(r, run_key=r["run_key"] + "w", weight_decay=1e-3,
                          auc=r["auc"] - 0.01) for r in rows]
  result = report.analyse(searched, n_boot=200)
  assert result["selection_note"].startswith("Each entry: per slot")
  assert "k = 2 runs (2 weight_decay) by AUC on test" in result["selection_note"]
  base = [c for c in result["comparisons"]
          if c.reference == "baseline" and c.metric == "auc"]
  assert base and all(c.n == 4 for c in base)  # each weight decay is its own pair
  data = report.to_json(result, n_rows=len(searched))
  wds = data["wd_sensitivity"]["auc"]["baseline"]
  assert set(wds) == {"0.001", f"{rows[0]['weight_decay']:g}"}
  assert all(s["n"] == 2 for s in wds.values())
  assert data["selection_in_study"] == result["selection_note"]
  md = report.render_markdown(report._blocks(workdir, searched, result, {}, None, None),
                              workdir)
  assert "## Sensitivity to the weight decay" in md
  assert "In this study: Each entry" in md
  # The real study searched nothing: its report says so and has no weight-decay table.
  assert "one run per slot; nothing was collapsed" in (workdir / "report.md").read_text()
  assert report.analyse(rows, n_boot=200)["wd_sensitivity"] == {}
