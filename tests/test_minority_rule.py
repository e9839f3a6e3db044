"""Tests for the paper's ImageNet minority rule (Section 3.3.3) and the availability check.

"Classes with less than 1 000 cases were always chosen as minority ones": `imbalance.step`
and `imbalance.linear` with the ``short_first`` rule, `imbalance.check_available` and
`imbalance.case_counts`, against synthetic label arrays and a tiny image folder.
"""

import doctest

import jax
import numpy as np
import pytest

from imbjax import imbalance


# --- check_available ------------------------------------------------------------------


def test_check_available_names_every_short_class():
  names = ("n01440764", "n01443537", "n01484850", "n01491361")
  imbalance.check_available([1000, 100, 0, 1300], [1300, 732, 0, 1300], names)  # fits
  with pytest.raises(ValueError) as err:
    imbalance.check_available([1000, 1000, 10, 1000], [1300, 732, 5, 1300], names,
                              case="step_rho10_mu0.1")
  msg = str(err.value)
  assert msg.startswith("case step_rho10_mu0.1: 2 classes have fewer")
  assert ("class 'n01443537' (index 1) has 732 training examples; the case asks for 1000"
          in msg)
  assert "class 'n01484850' (index 2) has 5 training examples; the case asks for 10" in msg
  assert "n01440764" not in msg and "n01491361" not in msg
  with pytest.raises(ValueError, match=r"^1 class has .*: class 1 has 732 training"):
    imbalance.check_available([1000, 1000], [1300, 732])


def test_check_available_refusals():
  with pytest.raises(ValueError, match=r"available must hold one count per class \(3\)"):
    imbalance.check_available([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="counts_wanted must be >= 0"):
    imbalance.check_available([1, -2], [1, 2])
  with pytest.raises(ValueError, match="available must be integers"):
    imbalance.check_available([1, 2], [1.5, 2])
  with pytest.raises(ValueError, match="class_names has 1 names for 2 classes"):
    imbalance.check_available([1, 2], [1, 2], ("a",))


def test_module_doctests():
  result = doctest.testmod(imbalance, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0 and result.attempted >= 4
