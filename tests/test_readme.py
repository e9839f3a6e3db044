"""README's Quickstart and .ci/run must say the same thing."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quickstart_commands():
  text = (ROOT / "README.md").read_text()
  section = text.split("## Quickstart", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_quickstart_starts_with_exactly_two_commands():
  commands = _quickstart_commands()
  assert len(commands) == 2, commands
  install_and_run, test = commands
  assert "pip install" in install_and_run and "experiments.sweep" in install_and_run
  assert "pytest" in test


def test_ci_installs_and_tests_as_readme_says():
  ci = (ROOT / ".ci" / "run").read_text()
  install_and_run, test = _quickstart_commands()
  install = install_and_run.split("&&")[0].strip()
  assert install.replace("pip install", "python -m pip install -q") in ci
  assert test.strip() in ci
