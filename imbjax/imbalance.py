"""Class-count profiles of an artificially imbalanced training set, and exact subsampling.

This module owns *how many* examples each class keeps (Buda et al. 2018, Section 3.1):

* `step`: ``round(mu * N)`` minority classes with ``max_count / rho`` examples each, the
  rest with ``max_count`` (the paper's Figure 1a-b);
* `linear`: counts interpolated linearly between ``max_count`` and ``max_count / rho`` so
  that consecutive differences are constant (Figure 1c);
* `exponential`: the long-tailed CIFAR-10-LT profile of Cao et al. (2019), for comparison
  with later work;

and `subsample`, which draws a random subset of a labelled set with exactly those
per-class counts. Every profile returns an ``np.ndarray`` of ``int64`` indexed by class
label. Randomness comes only from an explicit `jax.random` key.

Which classes are minority is a rule (`MINORITY_CHOICES`): the fixed ``'lowest'`` labels
(CIFAR-10), a keyed ``'random'`` draw (MNIST), or ``'short_first'`` (ImageNet, Section
3.3.3: "Classes with less than 1 000 cases were always chosen as minority ones"), which
takes the classes' sizes (``available=``) and always makes those below ``max_count``
minority. `check_available` names every class short of what a case asks for, and
`case_counts` is the one call a study driver makes per case (profile, rule, check).

Example::

    >>> import jax
    >>> step(10, 5000, rho=10, mu=0.5, minority='lowest').tolist()
    [500, 500, 500, 500, 500, 5000, 5000, 5000, 5000, 5000]
    >>> linear(10, 5000, rho=10, order='ascending').tolist()
    [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000]
    >>> idx = subsample(labels, step(10, 5000, 10, 0.5, minority='lowest'),
    ...                 jax.random.key(0))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["step", "linear", "exponential", "subsample", "check_available", "case_counts",
           "PROFILES", "get_profile"]

MINORITY_CHOICES = ("random", "lowest", "short_first")
ORDER_CHOICES = ("random", "ascending", "short_first")


def _round_half_up(x: float) -> int:
  # Python's round() is banker's rounding (round(2.5) == 2); counts of the paper's grid
  # (e.g. mu * N = 2.5 for N = 5) should not depend on the parity of the neighbour.
  return int(math.floor(x + 0.5))


def _host_rng(key: jax.Array, *salt: int) -> np.random.Generator:
  """A NumPy generator seeded from a `jax.random` key (typed or raw) and integer salts.

  Host-side plans draw from this instead of `jax.random.permutation`: the latter compiles
  a new XLA program for every distinct length (about a second each), and plans of many
  different class sizes would pay that again and again. Seeding goes through NumPy's
  SeedSequence (a hash of all words), so the key stays the one source of randomness,
  different salts give independent streams, and no global state is touched.
  """
  if key is None:
    raise ValueError("a jax.random key is required, got None")
  data = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
  return np.random.default_rng([int(w) for w in data] + [int(s) for s in salt])


def _check_num_classes(num_classes: Any) -> int:
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
    raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2 for an imbalance profile, got {num_classes}")
  return int(num_classes)


def _check_max_count(max_count: Any) -> int:
  if isinstance(max_count, bool) or not isinstance(max_count, (int, np.integer)):
    raise ValueError(f"max_count must be an integer, got {max_count!r}")
  if max_count < 1:
    raise ValueError(f"max_count must be >= 1, got {max_count}")
  return int(max_count)


def _check_ratio(value: Any, name: str = "rho") -> float:
  """`value` as a float imbalance ratio (finite, >= 1); the error names it `name`."""
  try:
    ratio = float(value)
  except (TypeError, ValueError):
    ratio = math.nan
  if not math.isfinite(ratio) or ratio < 1.0:
    raise ValueError(f"{name} must be a finite number >= 1, got {value!r}")
  return ratio


def _minority_count(max_count: int, rho: float) -> int:
  return max(1, _round_half_up(max_count / rho))


def step(
    num_classes: int,
    max_count: int,
    rho: float,
    mu: float,
    *,
    minority: str = "random",
    key: jax.Array | None = None,
    available: Any = None,
    class_names: Any = None,
) -> np.ndarray:
  """Per-class counts of a *step* imbalance (Buda et al. 2018, Eq. 1-2, Figure 1a-b).

  Rounding: the number of minority classes is ``floor(mu * num_classes + 0.5)`` (round half
  up) and the minority count is ``max(1, floor(max_count / rho + 0.5))``, so MNIST's
  ``max_count=5000, rho=5000`` gives one example and ``rho=10`` gives exactly 500.

  Args:
    num_classes: number of classes N (>= 2).
    max_count: examples in each majority class (>= 1).
    rho: imbalance ratio max/min (>= 1).
    mu: fraction of minority classes, in the open interval (0, 1); ``round(mu * N)`` must
      leave at least one minority and one majority class.
    minority: ``'lowest'`` makes labels ``0 .. k-1`` the minority (the paper's CIFAR-10
      protocol: fixed and nested as mu grows); ``'random'`` picks them with ``key`` (the
      MNIST protocol: a new random set each repetition). For a fixed key the random
      minority sets are also nested in mu (they are prefixes of one permutation).
      ``'short_first'`` is the ImageNet protocol (Section 3.3.3: "Classes with less than
      1 000 cases were always chosen as minority ones"): every class with fewer than
      ``max_count`` examples in ``available`` is minority, and the remaining minority
      slots go to the other classes in the order of the same keyed permutation as
      ``'random'``. So for a fixed key and ``available`` the minority sets are nested in
      mu, and with no short class the result equals ``'random'``'s.
    key: a `jax.random` key; required for ``'random'`` and ``'short_first'``, ignored
      for ``'lowest'``.
    available: training examples per class, shape ``(num_classes,)`` (e.g.
      ``np.bincount(labels, minlength=num_classes)``); required for ``'short_first'``.
      With any rule, the returned counts are checked against it (`check_available`).
    class_names: optional class names (index = label) for error messages.

  Returns:
    ``np.ndarray`` of shape ``(num_classes,)``, dtype int64, ``counts[c]`` for label c.

  Raises:
    ValueError: bad num_classes, max_count, rho (< 1), mu outside (0, 1), a mu giving no
      minority or no majority class, an unknown ``minority``, a missing key or (for
      ``'short_first'``) missing ``available``. For ``'short_first'`` also: a class with
      fewer examples than even the minority count (named), or more short classes than
      minority slots (the message names them with their counts, the cap ``max_count``
      and the smallest mu that would hold them). With ``available`` and another rule: a
      class with fewer examples than its count (see `check_available`).
  """
  n = _check_num_classes(num_classes)
  max_count = _check_max_count(max_count)
  rho = _check_ratio(rho)
  try:
    mu_f = float(mu)
  except (TypeError, ValueError):
    raise ValueError(f"mu must be a number in (0, 1), got {mu!r}") from None
  if not 0.0 < mu_f < 1.0:
    raise ValueError(f"mu must lie in the open interval (0, 1), got {mu!r}")
  n_min = _round_half_up(mu_f * n)
  if n_min < 1 or n_min > n - 1:
    raise ValueError(
        f"mu={mu!r} with num_classes={n} gives {n_min} minority classes; step imbalance "
        f"needs between 1 and {n - 1}"
    )
  if minority not in MINORITY_CHOICES:
    raise ValueError(f"unknown minority={minority!r}; accepted: {list(MINORITY_CHOICES)}")
  counts = np.full(n, max_count, dtype=np.int64)
  low = _minority_count(max_count, rho)
  if minority == "lowest":
    chosen = np.arange(n_min)
  else:
    if key is None:
      raise ValueError(f"minority={minority!r} needs a jax.random key, got key=None")
    if minority == "random":
      chosen = _host_rng(key, n).permutation(n)[:n_min]
    else:
      chosen = _short_first(n, n_min, max_count, low, rho, mu, key, available, class_names)
  counts[chosen] = low
  if available is not None:
    check_available(counts, available, class_names)
  return counts


def _short_first(n: int, n_min: int, max_count: int, low: int, rho: float, mu: Any,
                 key: jax.Array, available: Any, class_names: Any) -> np.ndarray:
  """Minority labels of `step`'s ``'short_first'`` rule (short classes, then keyed)."""
  if available is None:
    raise ValueError("minority='short_first' needs available= (training examples per "
                     "class, e.g. np.bincount(labels, minlength=num_classes))")
  have = _as_counts(available, "available", size=n)
  if class_names is not None and len(class_names) != n:
    raise ValueError(f"class_names has {len(class_names)} names for {n} classes")
  short = np.nonzero(have < max_count)[0]
  tiny = short[have[short] < low]
  if tiny.size:
    listed = ", ".join(f"{_class_label(int(c), class_names)} ({int(have[c])} examples)"
                       for c in tiny)
    fewest = int(have[tiny].min())
    fix = (f"raise rho to >= {max_count / fewest:g}" if fewest else
           "an empty class cannot be kept")
    raise ValueError(
        f"minority='short_first': {listed} cannot hold even the minority count {low} "
        f"(max_count={max_count} / rho={rho:g}); {fix}, or leave the class out")
  if short.size > n_min:
    listed = ", ".join(f"{_class_label(int(c), class_names)}: {int(have[c])}"
                       for c in short)
    need = (f"mu >= {short.size / n:g} ({short.size} minority classes)"
            if short.size <= n - 1 else "a majority class, which no mu gives")
    raise ValueError(
        f"minority='short_first': {short.size} of {n} classes have fewer than "
        f"max_count={max_count} examples and must be minority ({listed}), but "
        f"mu={mu!r} gives only {n_min} minority classes; holding them all needs {need}, "
        f"or max_count <= {int(have.min())} (then no class is short)")
  perm = _host_rng(key, n).permutation(n)  # the permutation 'random' draws
  others = perm[have[perm] >= max_count]
  return np.concatenate([short, others[: n_min - short.size]])


def linear(
    num_classes: int,
    max_count: int,
    rho: float,
    *,
    order: str = "random",
    key: jax.Array | None = None,
    available: Any = None,
    class_names: Any = None,
) -> np.ndarray:
  """Per-class counts of a *linear* imbalance (Buda et al. 2018, Figure 1c).

  The sorted counts are ``floor(lo + i * (max_count - lo) / (N - 1) + 0.5)`` for
  ``i = 0 .. N-1`` with ``lo = max(1, floor(max_count / rho + 0.5))``: the end points are
  exactly the minority count (as in `step`) and ``max_count``, and consecutive differences
  are constant up to that final rounding (exactly constant when ``N - 1`` divides
  ``max_count - lo``, e.g. MNIST rho 10: 500, 1000, ..., 5000; rho 5000 ends at 1).

  Args:
    num_classes: number of classes N (>= 2).
    max_count: examples in the largest class (>= 1).
    rho: imbalance ratio max/min (>= 1).
    order: ``'ascending'`` gives label 0 the fewest examples and label N-1 the most (the
      fixed CIFAR-10 protocol, consistent with ``step(minority='lowest')``); ``'random'``
      assigns the sorted counts to a random permutation of labels drawn with ``key``.
      ``'short_first'`` is `step`'s ImageNet rule carried over: the classes with fewer
      than ``max_count`` examples in ``available`` take the lowest counts (the fewest
      examples the lowest count, ties by label), the others take the rest in the order
      of ``'random'``'s permutation (so with no short class it equals ``'random'``).
      That matching is the one most likely to fit: if it leaves a class short, no
      assignment of these counts fits.
    key: a `jax.random` key; required for ``'random'`` and ``'short_first'``, ignored
      for ``'ascending'``.
    available: training examples per class, shape ``(num_classes,)``; required for
      ``'short_first'``. With any order, the counts are checked against it
      (`check_available`).
    class_names: optional class names (index = label) for error messages.

  Returns:
    ``np.ndarray`` of shape ``(num_classes,)``, dtype int64.

  Raises:
    ValueError: bad num_classes, max_count, rho (< 1), unknown ``order``, missing key or
      (``'short_first'``) missing ``available``; with ``available``, a class with fewer
      examples than its count (the message names it).
  """
  n = _check_num_classes(num_classes)
  max_count = _check_max_count(max_count)
  rho = _check_ratio(rho)
  if order not in ORDER_CHOICES:
    raise ValueError(f"unknown order={order!r}; accepted: {list(ORDER_CHOICES)}")
  lo = _minority_count(max_count, rho)
  diff = (max_count - lo) / (n - 1)
  ascending = np.array([_round_half_up(lo + i * diff) for i in range(n)], dtype=np.int64)
  ascending[-1] = max_count  # guard the end point against float drift in lo + (N-1)*diff
  if order == "ascending":
    counts = ascending
  else:
    if key is None:
      raise ValueError(f"order={order!r} needs a jax.random key, got key=None")
    perm = _host_rng(key, n).permutation(n)
    if order == "short_first":
      if available is None:
        raise ValueError("order='short_first' needs available= (training examples per "
                         "class, e.g. np.bincount(labels, minlength=num_classes))")
      have = _as_counts(available, "available", size=n)
      short = np.nonzero(have < max_count)[0]
      short = short[np.argsort(have[short], kind="stable")]
      perm = np.concatenate([short, perm[have[perm] >= max_count]])
    counts = np.empty(n, dtype=np.int64)
    counts[perm] = ascending
  if available is not None:
    check_available(counts, available, class_names)
  return counts


def exponential(num_classes: int, max_count: int, rho: float) -> np.ndarray:
  """Per-class counts of the long-tailed (exponential) profile of Cao et al. (2019).

  ``n_i = int(max_count * (1/rho) ** (i / (N - 1)))`` for label i, computed in Python floats
  exactly as in the LDAM-DRW code (``img_max * imb_factor ** (cls_idx / (cls_num - 1.0))``
  truncated with ``int``), so CIFAR-10-LT (max 5000, rho 100) gives
  5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50. Label 0 is the head. A count that
  would truncate to 0 (only when ``max_count / rho < 1``) is raised to 1 so that no class
  is empty.

  Args:
    num_classes: number of classes N (>= 2).
    max_count: examples in class 0 (>= 1).
    rho: imbalance ratio (>= 1); Cao et al.'s ``imb_factor`` is ``1 / rho``.

  Returns:
    ``np.ndarray`` of shape ``(num_classes,)``, dtype int64, non-increasing in the label.

  Raises:
    ValueError: bad num_classes, max_count or rho (< 1).
  """
  n = _check_num_classes(num_classes)
  max_count = _check_max_count(max_count)
  rho = _check_ratio(rho)
  imb_factor = 1.0 / rho
  counts = [max(1, int(max_count * (imb_factor ** (i / (n - 1.0))))) for i in range(n)]
  return np.array(counts, dtype=np.int64)


def _as_labels(labels: Any, num_classes: int | None = None) -> np.ndarray:
  arr = np.asarray(labels)
  if arr.ndim != 1:
    raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    if not np.all(np.equal(np.mod(arr, 1), 0)):
      raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  if arr.size and arr.min() < 0:
    raise ValueError(f"labels must be >= 0, got label {int(arr.min())}")
  if num_classes is not None and arr.size and arr.max() >= num_classes:
    raise ValueError(
        f"labels must lie in [0, {num_classes}), got label {int(arr.max())}"
    )
  return arr


def _as_counts(counts: Any, name: str = "counts", size: int | None = None) -> np.ndarray:
  """``counts`` as a 1-D int64 array of non-negative integers; errors call it ``name``."""
  cnt = np.asarray(counts)
  if cnt.ndim != 1 or cnt.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array, got shape {cnt.shape}")
  if size is not None and cnt.size != size:
    raise ValueError(f"{name} must hold one count per class ({size}), got {cnt.size}")
  if not np.issubdtype(cnt.dtype, np.integer):
    if not np.all(np.equal(np.mod(cnt, 1), 0)):
      raise ValueError(f"{name} must be integers, got {cnt.tolist()}")
  cnt = cnt.astype(np.int64)
  if cnt.min() < 0:
    raise ValueError(f"{name} must be >= 0, got {cnt.tolist()}")
  return cnt


def _class_label(c: int, class_names: Any = None) -> str:
  if class_names is None:
    return f"class {c}"
  return f"class {str(class_names[c])!r} (index {c})"


def check_available(
    counts_wanted: Any,
    available: Any,
    class_names: Any = None,
    *,
    case: str | None = None,
) -> None:
  """Raises unless every class holds at least the examples a case asks of it.

  Pure and cheap: a study driver calls it on every case's counts before any training
  starts, so a run never dies hours in on a short class (ILSVRC-2012's smallest class
  has 732 training images, fewer than the 1,000 a majority class keeps).

  Example::

    >>> check_available([1000, 100], [1300, 732], ("n01440764", "n01443537"))
    >>> check_available([1000, 1000], [1300, 732], ("n01440764", "n01443537"))
    Traceback (most recent call last):
    ...
    ValueError: 1 class ...: class 'n01443537' (index 1) has 732 training examples; ...

  Args:
    counts_wanted: per-class counts a case asks for, shape ``(num_classes,)``.
    available: per-class training examples at hand, same shape (e.g.
      ``np.bincount(labels, minlength=num_classes)``).
    class_names: optional names, index = label, used in the message.
    case: optional case name, prefixed to the message.

  Raises:
    ValueError: a class has fewer examples than asked (the message names every such
      class, its index, what it has and what is asked), or malformed arguments.
  """
  want = _as_counts(counts_wanted, "counts_wanted")
  have = _as_counts(available, "available", size=want.size)
  if class_names is not None and len(class_names) != want.size:
    raise ValueError(
        f"class_names has {len(class_names)} names for {want.size} classes")
  short = np.nonzero(want > have)[0]
  if short.size:
    plural = "class has" if short.size == 1 else "classes have"
    details = "; ".join(
        f"{_class_label(int(c), class_names)} has {int(have[c])} training examples; "
        f"the case asks for {int(want[c])}" for c in short)
    prefix = f"case {case}: " if case else ""
    raise ValueError(f"{prefix}{short.size} {plural} fewer training examples than the "
                     f"case asks for: {details}")


def subsample(labels: Any, counts: Any, key: jax.Array) -> np.ndarray:
  """Indices of a random subset of ``labels`` with exactly ``counts[c]`` examples of class c.

  One random permutation of all examples is drawn from ``key`` (through a NumPy generator
  seeded from the key, see `_host_rng`); each class keeps its first
  ``counts[c]`` examples in that order. So for a fixed key the subsets are nested: raising a
  class's count only adds examples (useful for comparing profiles on shared data).

  Args:
    labels: integer class labels of the full set, shape ``(n,)``, values in
      ``[0, len(counts))``.
    counts: per-class target counts, shape ``(num_classes,)``, each ``0 <= counts[c] <=``
      the number of examples of class c.
    key: a `jax.random` key.

  Returns:
    ``np.ndarray`` of int64 indices into ``labels``, sorted by class then index.

  Raises:
    ValueError: labels not 1-D or outside ``[0, len(counts))``, negative counts, or a
      count larger than what its class has.
  """
  cnt = _as_counts(counts)
  lab = _as_labels(labels, num_classes=cnt.size)
  have = np.bincount(lab, minlength=cnt.size)
  short = np.nonzero(cnt > have)[0]
  if short.size:
    c = int(short[0])
    raise ValueError(
        f"counts[{c}]={int(cnt[c])} exceeds the {int(have[c])} examples of class {c}"
    )
  if lab.size == 0:
    return np.zeros(0, dtype=np.int64)
  order = _host_rng(key, lab.size).permutation(lab.size).astype(np.int64)
  # Group the random order by class while keeping it random within each class.
  grouped = order[np.argsort(lab[order], kind="stable")]
  starts = np.concatenate([[0], np.cumsum(have)[:-1]])
  picked = np.concatenate([grouped[s : s + k] for s, k in zip(starts, cnt)])
  return picked[np.lexsort((picked, lab[picked]))].astype(np.int64)


# How a study's ``minority`` rule orders a linear profile (the fixed CIFAR-10 protocol,
# the random MNIST one, and the ImageNet rule).
_LINEAR_ORDER = {"lowest": "ascending", "random": "random", "short_first": "short_first"}


def case_counts(
    profile: str,
    num_classes: int,
    max_count: int,
    rho: float = 1.0,
    mu: float | None = None,
    *,
    minority: str = "random",
    key: jax.Array | None = None,
    available: Any = None,
    class_names: Any = None,
    case: str | None = None,
) -> np.ndarray:
  """Per-class counts of one case of a study, checked against the classes' sizes.

  The one call a study driver makes per case, before any training starts: it picks the
  profile, maps the study's ``minority`` rule onto it and, given ``available``, raises
  unless every class can hold its count. Every error is prefixed with ``case``.

  Example::

    >>> import jax
    >>> case_counts("step", 4, 1000, 10, 0.5, minority="short_first",
    ...             key=jax.random.key(0), available=[1300, 732, 1300, 1300]).tolist()
    [1000, 100, 100, 1000]

  Args:
    profile: ``'step'``, ``'linear'``, ``'exponential'`` or ``'balanced'`` (every class
      ``max_count``). The original, untouched set has no counts to make: callers keep
      it aside.
    num_classes: number of classes N.
    max_count: the cap: examples in each majority class.
    rho: imbalance ratio (ignored by ``'balanced'``).
    mu: fraction of minority classes (``'step'`` only).
    minority: ``'random'``, ``'lowest'`` or ``'short_first'``: `step`'s rule; `linear`
      takes the matching order (``'random'``, ``'ascending'``, ``'short_first'``);
      ``'exponential'`` and ``'balanced'`` ignore it.
    key: a `jax.random` key, for the ``'random'`` and ``'short_first'`` rules.
    available: training examples per class, shape ``(num_classes,)`` (e.g.
      ``np.bincount(labels, minlength=num_classes)``); required by ``'short_first'``
      (step and linear), and when given the counts are checked against it.
    class_names: optional class names (index = label) for error messages.
    case: optional case name, prefixed to error messages.

  Returns:
    ``np.ndarray`` of int64 counts, shape ``(num_classes,)``.

  Raises:
    ValueError: an unknown profile or rule, anything the profile refuses, or a class
      short of its count (see `check_available`); the message starts with the case name.
  """
  try:
    if minority not in MINORITY_CHOICES:
      raise ValueError(
          f"unknown minority={minority!r}; accepted: {list(MINORITY_CHOICES)}")
    extra = dict(key=key, available=available, class_names=class_names)
    if profile == "step":
      return step(num_classes, max_count, rho, mu, minority=minority, **extra)
    if profile == "linear":
      return linear(num_classes, max_count, rho, order=_LINEAR_ORDER[minority], **extra)
    if profile == "exponential":
      counts = exponential(num_classes, max_count, rho)
    elif profile == "balanced":
      counts = np.full(_check_num_classes(num_classes), _check_max_count(max_count),
                       dtype=np.int64)
    else:
      raise ValueError(f"unknown profile {profile!r}; accepted: "
                       f"{sorted(PROFILES) + ['balanced']}")
    if available is not None:
      check_available(counts, available, class_names)
    return counts
  except ValueError as e:
    if case is None:
      raise
    raise ValueError(f"case {case}: {e}") from None


PROFILES: dict[str, Callable[..., np.ndarray]] = {
    "step": step,
    "linear": linear,
    "exponential": exponential,
}


def get_profile(name: str) -> Callable[..., np.ndarray]:
  """The profile function registered under ``name``.

  Args:
    name: one of ``'step'``, ``'linear'``, ``'exponential'``.

  Returns:
    The profile function.

  Raises:
    ValueError: unknown name (the message lists the accepted ones).
  """
  try:
    return PROFILES[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown imbalance profile {name!r}; accepted: {sorted(PROFILES)}"
    ) from None
