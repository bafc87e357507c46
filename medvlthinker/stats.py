"""Sampling metrics and the precision of the benchmarks (docs/protocol.md sections 10-11), standard library only.

- :func:`pass_at_k`: the unbiased estimator 1 - C(n-c, k) / C(n, k) of the pass@k curves.
- :func:`avg_at_n`, :func:`maj_at_n`, :func:`mean_pass_at_k`: metrics@n over eval records.
- :func:`bootstrap_ci`, :func:`bootstrap_average_ci`, :func:`paired_bootstrap`: percentile bootstrap intervals,
  over rows or over clusters of rows (SLAKE, VQA-Rad and PathVQA ask several questions about one image, so
  rows sharing an image are not independent; resample the images when their ids are known).
- :func:`mcnemar`: two models graded on the same rows.

>>> pass_at_k(10, 3, 1)
0.3
>>> round(pass_at_k(4, 2, 2), 6)  # 1 - C(2,2)/C(4,2) = 1 - 1/6
0.833333
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from medvlthinker.grading import majority_vote, row_accuracy
from medvlthinker.schema import parse_options


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which equals 1 - C(n-c, k) / C(n, k) without huge binomials.

    >>> pass_at_k(5, 0, 3), pass_at_k(5, 3, 3), pass_at_k(64, 1, 64)
    (0.0, 1.0, 1.0)
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    if k == 1:
        return c / n  # exact; the product form would only round it
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def _num_correct(record: Mapping[str, Any]) -> int:
    if "num_correct" in record:
        return int(record["num_correct"])
    return sum(1 for r in record["rollouts"] if r["is_correct"])


def _num_rollouts(record: Mapping[str, Any]) -> int:
    if "num_rollouts" in record:
        return int(record["num_rollouts"])
    return len(record["rollouts"])


def _mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("cannot average an empty list")
    return math.fsum(values) / len(values)


def avg_at_n(records: Iterable[Mapping[str, Any]]) -> float:
    """Mean over rows of (correct rollouts / rollouts): the table's accuracy, as a fraction."""
    return _mean([row_accuracy(r) for r in records])


def maj_at_n(records: Iterable[Mapping[str, Any]], *, drop_unconverted: bool = False) -> float:
    """Fraction of rows whose majority-vote letter (over the rollouts' pred_letter) is the answer_label.

    As in the original, every rollout votes, a conversion failure with its raw prediction text (so several
    identical unparsed answers can outvote the right letter); ties go to the entry voted first
    (:func:`medvlthinker.grading.majority_vote`). ``drop_unconverted`` (opt-in) lets only predictions that map to
    an option letter vote, which scores a row by what the model chose rather than by how it failed to answer.

    >>> rows = [{"answer_label": "A", "options": '{"A": "x", "B": "y"}',
    ...          "rollouts": [{"pred_letter": "?"}, {"pred_letter": "?"}, {"pred_letter": "A"}]}]
    >>> maj_at_n(rows), maj_at_n(rows, drop_unconverted=True)
    (0.0, 1.0)
    """
    hits = []
    for record in records:
        letters = [r.get("pred_letter") for r in record["rollouts"]]
        if drop_unconverted:
            valid = parse_options(record["options"], strict=False)
            letters = [letter for letter in letters if letter in valid]
        hits.append(1.0 if majority_vote(letters) == record["answer_label"] else 0.0)
    return _mean(hits)


def mean_pass_at_k(records: Iterable[Mapping[str, Any]], k: int) -> float:
    """Mean over rows of :func:`pass_at_k` (n = the row's rollouts, c = its correct rollouts)."""
    return _mean([pass_at_k(_num_rollouts(r), _num_correct(r), k) for r in records])


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    # Linear interpolation between order statistics (numpy's default, "type 7").
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def _check_resampling(n_resamples: int, alpha: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _units(values: Sequence[float], clusters: Sequence[Hashable] | None) -> tuple[list[float], list[int]]:
    """Per resampling unit: (sum of values, number of rows). A unit is a row, or a cluster of rows."""
    if clusters is None:
        return [float(v) for v in values], [1] * len(values)
    if len(clusters) != len(values):
        raise ValueError(f"clusters has {len(clusters)} ids for {len(values)} values; give one id per row")
    sums: dict[Hashable, float] = {}
    counts: dict[Hashable, int] = {}
    for value, cluster in zip(values, clusters):
        sums[cluster] = sums.get(cluster, 0.0) + float(value)
        counts[cluster] = counts.get(cluster, 0) + 1
    return list(sums.values()), [counts[c] for c in sums]


def _resampled_means(
    values: Sequence[float], clusters: Sequence[Hashable] | None, n_resamples: int, rng: random.Random
) -> list[float]:
    if not values:
        raise ValueError("cannot bootstrap an empty list of values")
    sums, counts = _units(values, clusters)
    g = len(sums)
    means = []
    if clusters is None:
        for _ in range(n_resamples):
            means.append(sum(rng.choices(sums, k=g)) / g)
    else:
        index = range(g)
        for _ in range(n_resamples):
            picked = rng.choices(index, k=g)
            # Ratio estimator: clusters differ in size, so the mean is over the rows the drawn clusters hold.
            means.append(sum([sums[i] for i in picked]) / sum([counts[i] for i in picked]))
    return means


def _interval(point: float, resampled: list[float], alpha: float) -> tuple[float, float, float]:
    resampled = sorted(resampled)
    return point, _quantile(resampled, alpha / 2), _quantile(resampled, 1 - alpha / 2)


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of the mean: ``(mean, low, high)`` at level 1 - alpha.

    Resamples rows with replacement, or whole clusters when ``clusters`` gives a cluster id (e.g. an image id)
    per row. The point estimate is the mean of ``values`` themselves.
    """
    _check_resampling(n_resamples, alpha)
    resampled = _resampled_means(values, clusters, n_resamples, random.Random(seed))
    return _interval(_mean(values), resampled, alpha)


def bootstrap_average_ci(
    per_benchmark_values: Mapping[str, Sequence[float]],
    *,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    clusters: Mapping[str, Sequence[Hashable] | None] | None = None,
) -> tuple[float, float, float]:
    """Interval of the unweighted mean of benchmark means (the table's "Avg."): ``(mean, low, high)``.

    Each benchmark is resampled independently (over its rows, or its clusters when ``clusters[name]`` is given);
    each resample's average is the plain mean of the resampled benchmark means.
    """
    _check_resampling(n_resamples, alpha)
    if not per_benchmark_values:
        raise ValueError("no benchmarks given")
    rng = random.Random(seed)
    clusters = clusters or {}
    names = list(per_benchmark_values)
    totals = [0.0] * n_resamples
    for name in names:
        means = _resampled_means(per_benchmark_values[name], clusters.get(name), n_resamples, rng)
        totals = [t + m for t, m in zip(totals, means)]
    point = _mean([_mean(per_benchmark_values[name]) for name in names])
    return _interval(point, [t / len(names) for t in totals], alpha)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    clusters: Sequence[Hashable] | None = None,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """Paired bootstrap of mean(a) - mean(b) for two models scored on the same rows.

    The same rows (or clusters) are drawn for both models. Returns ``diff``, the percentile interval ``low`` /
    ``high``, and a two-sided ``p_value`` for "no difference": the share of resampled differences, centred on
    ``diff``, at least as far from it as ``diff`` is from 0, as ``(1 + count) / (1 + n_resamples)``.

    With fewer than two resampling units (one row, or every row in one cluster) every resample is the same, so
    there is no evidence either way: ``p_value`` is None (not the smallest p the formula allows). ``units`` says
    how many units were resampled.

    >>> paired_bootstrap([1.0, 1.0, 0.0], [0.0, 0.0, 0.0], clusters=["img", "img", "img"], n_resamples=200)["p_value"]
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must score the same rows, got {len(a)} and {len(b)} values")
    _check_resampling(n_resamples, alpha)
    d = [float(x) - float(y) for x, y in zip(a, b)]
    resampled = _resampled_means(d, clusters, n_resamples, random.Random(seed))
    diff, low, high = _interval(_mean(d), resampled, alpha)
    units = len(_units(d, clusters)[0])
    if units < 2:
        return {"diff": diff, "low": low, "high": high, "p_value": None, "units": units}
    extreme = sum(1 for m in resampled if abs(m - diff) >= abs(diff))
    return {"diff": diff, "low": low, "high": high, "p_value": min(1.0, (1 + extreme) / (1 + n_resamples)),
            "units": units}


def mcnemar(
    a_correct: Sequence[bool | int],
    b_correct: Sequence[bool | int],
    *,
    exact_below: int = 25,
) -> dict[str, Any]:
    """McNemar's test for two models graded on the same rows.

    ``b01`` counts rows where a is wrong and b right, ``b10`` the reverse. ``statistic`` is the chi-square with
    continuity correction, (|b01 - b10| - 1)^2 / (b01 + b10) (0 when there is no discordant row). The two-sided
    ``p_value`` is the exact binomial (p = 1/2) one when b01 + b10 < ``exact_below``, else the chi-square one
    (1 degree of freedom); ``method`` says which.

    >>> mcnemar([1, 1, 0, 0, 1, 0, 0], [1, 0, 1, 1, 1, 1, 1])["p_value"]
    0.375
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"a and b must score the same rows, got {len(a_correct)} and {len(b_correct)} values")
    b01 = sum(1 for x, y in zip(a_correct, b_correct) if not x and y)
    b10 = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    n = b01 + b10
    if n == 0:
        return {"b01": 0, "b10": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    statistic = max(0, abs(b01 - b10) - 1) ** 2 / n
    if n < exact_below:
        tail = sum(math.comb(n, i) for i in range(min(b01, b10) + 1))
        p_value = min(1.0, 2 * tail / 2**n)
        method = "exact"
    else:
        # Survival function of chi-square with 1 degree of freedom.
        p_value = math.erfc(math.sqrt(statistic / 2))
        method = "chi2"
    return {"b01": b01, "b10": b10, "statistic": statistic, "p_value": p_value, "method": method}
