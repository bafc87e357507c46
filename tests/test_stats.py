"""Sampling metrics, bootstrap intervals and McNemar's test (docs/protocol.md sections 10-11)."""

from __future__ import annotations

import doctest
import math
import random
import time
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medvlthinker.stats as stats
from medvlthinker.stats import (
    avg_at_n,
    bootstrap_average_ci,
    bootstrap_ci,
    maj_at_n,
    mcnemar,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
)


def test_doctests():
    assert doctest.testmod(stats).failed == 0


# ---- pass@k -----------------------------------------------------------------------------------------------------


def test_pass_at_k_matches_the_closed_form_on_small_cases():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_known_values():
    assert pass_at_k(16, 0, 5) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(5, 1, 5) == 1.0
    assert pass_at_k(64, 1, 1) == 1 / 64
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    # large n stays finite and exact enough (the binomials would be enormous)
    assert pass_at_k(1000, 10, 500) == pytest.approx(1 - math.comb(990, 500) / math.comb(1000, 500), rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@given(n=st.integers(1, 80), data=st.data())
def test_pass_at_k_properties(n, data):
    c = data.draw(st.integers(0, n))
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert values[0] == c / n
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))  # monotone in k
    if c > 0:
        assert values[-1] == 1.0


# ---- metrics over records ---------------------------------------------------------------------------------------


def record(letters, label="B", options='{"A": "Yes", "B": "No"}'):
    return {
        "dataset_name": "slake_closed",
        "answer_label": label,
        "options": options,
        "rollouts": [{"pred_letter": x, "is_correct": x == label} for x in letters],
        "num_rollouts": len(letters),
        "num_correct": sum(x == label for x in letters),
    }


def test_avg_maj_and_pass_over_records():
    records = [
        record(["B", "B", "A", "A", "B"]),  # 3/5, maj B, correct
        record(["A", "B", "A", "B", "A"]),  # 2/5, maj A, wrong
        record(["oops", "oops", "oops", "B", "A"]),  # the original: the unparsed "oops" wins the vote, wrong
        record(["A", "A", "A", "A", "A"]),  # 0/5
    ]
    assert avg_at_n(records) == pytest.approx((3 / 5 + 2 / 5 + 1 / 5 + 0) / 4)
    assert maj_at_n(records) == pytest.approx(1 / 4)
    # opt-in: conversion failures do not vote, so the third row is a B/A tie -> B, voted first
    assert maj_at_n(records, drop_unconverted=True) == pytest.approx(2 / 4)
    assert mean_pass_at_k(records, 5) == pytest.approx(3 / 4)
    assert mean_pass_at_k(records, 1) == pytest.approx(avg_at_n(records))


def test_maj_counts_every_prediction_with_or_without_options():
    r = record(["x", "x", "B"])
    assert maj_at_n([r]) == 0.0
    del r["options"]
    assert maj_at_n([r]) == 0.0
    assert maj_at_n([record(["x", "x", "B"])], drop_unconverted=True) == 1.0


def test_empty_records_fail():
    with pytest.raises(ValueError):
        avg_at_n([])


# ---- bootstrap --------------------------------------------------------------------------------------------------


def bernoulli(n, p, seed):
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = bernoulli(300, 0.6, 1)
    a = bootstrap_ci(values, n_resamples=500, seed=3)
    assert a == bootstrap_ci(values, n_resamples=500, seed=3)
    assert a != bootstrap_ci(values, n_resamples=500, seed=4)
    mean, low, high = a
    assert mean == pytest.approx(sum(values) / 300)
    assert low < mean < high
    # half-width near the normal approximation 1.96 * sqrt(p(1-p)/n)
    assert (high - low) / 2 == pytest.approx(1.96 * math.sqrt(mean * (1 - mean) / 300), rel=0.2)


def test_bootstrap_ci_constant_values_give_a_point():
    assert bootstrap_ci([0.5] * 20, n_resamples=50) == (0.5, 0.5, 0.5)
    assert bootstrap_ci([1.0], n_resamples=10) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 0.0], alpha=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 0.0], n_resamples=0)
    with pytest.raises(ValueError, match="one id per row"):
        bootstrap_ci([1.0, 0.0], clusters=[1])


def test_cluster_bootstrap_widens_when_rows_share_an_image():
    # 100 images, 4 questions each answered alike: only 100 independent units, not 400
    per_image = bernoulli(100, 0.5, 2)
    values = [v for v in per_image for _ in range(4)]
    clusters = [i for i in range(100) for _ in range(4)]
    _, low_rows, high_rows = bootstrap_ci(values, n_resamples=1000, seed=0)
    mean, low, high = bootstrap_ci(values, n_resamples=1000, seed=0, clusters=clusters)
    assert mean == pytest.approx(sum(values) / 400)
    assert (high - low) > 1.6 * (high_rows - low_rows)  # about sqrt(4) = 2 times wider
    # singleton clusters are the row bootstrap
    assert bootstrap_ci(values, n_resamples=200, seed=5, clusters=list(range(400)))[1:] == pytest.approx(
        bootstrap_ci(values, n_resamples=200, seed=5)[1:], abs=0.03
    )


def test_cluster_bootstrap_handles_unequal_cluster_sizes():
    values = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    clusters = ["a", "a", "a", "b", "c", "c"]
    mean, low, high = bootstrap_ci(values, n_resamples=300, clusters=clusters)
    assert mean == pytest.approx(4 / 6)
    assert 0.0 <= low <= mean <= high <= 1.0


def test_bootstrap_coverage_is_near_nominal():
    # 200 simulated benchmarks of 100 Bernoulli(0.3) rows; a 95% interval should cover 0.3 about 95% of the time
    covered = 0
    for sim in range(200):
        values = bernoulli(100, 0.3, 1000 + sim)
        _, low, high = bootstrap_ci(values, n_resamples=200, seed=sim)
        covered += low <= 0.3 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_average_ci_is_the_unweighted_mean_of_means():
    per = {"small": bernoulli(50, 0.8, 1), "large": bernoulli(1000, 0.2, 2)}
    mean, low, high = bootstrap_average_ci(per, n_resamples=500)
    means = [sum(v) / len(v) for v in per.values()]
    assert mean == pytest.approx(sum(means) / 2)  # not the pooled mean
    assert mean != pytest.approx(sum(per["small"] + per["large"]) / 1050)
    assert low < mean < high
    # with one benchmark it is the plain bootstrap with the same seed
    assert bootstrap_average_ci({"x": per["small"]}, n_resamples=300, seed=9) == pytest.approx(
        bootstrap_ci(per["small"], n_resamples=300, seed=9)
    )
    # clusters per benchmark are honoured
    clustered = bootstrap_average_ci(
        {"x": per["small"]}, n_resamples=300, seed=9, clusters={"x": list(range(50))}
    )
    assert clustered == pytest.approx(bootstrap_ci(per["small"], n_resamples=300, seed=9, clusters=list(range(50))))
    with pytest.raises(ValueError):
        bootstrap_average_ci({})


def test_average_interval_is_narrower_than_its_parts():
    rng = random.Random(0)
    per = {f"b{i}": bernoulli(300, rng.random(), i) for i in range(6)}
    _, low, high = bootstrap_average_ci(per, n_resamples=400)
    widths = [bootstrap_ci(v, n_resamples=400)[2] - bootstrap_ci(v, n_resamples=400)[1] for v in per.values()]
    assert high - low < min(widths)


def test_paired_bootstrap():
    a = bernoulli(400, 0.6, 1)
    same = paired_bootstrap(a, a, n_resamples=300)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "units": 400}
    better = paired_bootstrap([1.0] * 50, [0.0] * 50, n_resamples=300)
    assert better["diff"] == 1.0 and better["low"] == better["high"] == 1.0
    assert better["p_value"] == pytest.approx(1 / 301)
    b = [x if i % 10 else 1.0 - x for i, x in enumerate(a)]  # flip every 10th row
    result = paired_bootstrap(a, b, n_resamples=500)
    assert result["diff"] == pytest.approx((sum(a) - sum(b)) / 400)
    assert result["low"] <= result["diff"] <= result["high"]
    assert 0.0 < result["p_value"] <= 1.0
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = random.Random(7)
    truth = [rng.random() < 0.5 for _ in range(1000)]
    a = [float(t) for t in truth]
    b_better = [1.0 if (t or rng.random() < 0.2) else 0.0 for t in truth]  # b fixes ~20% of a's misses
    assert paired_bootstrap(a, b_better, n_resamples=500)["p_value"] < 0.01
    b_noise = [1.0 - x if rng.random() < 0.05 else x for x in a]  # symmetric noise
    assert paired_bootstrap(a, b_noise, n_resamples=500, clusters=list(range(1000)))["p_value"] > 0.01


def test_bootstrap_is_fast_at_the_eval_set_size():
    values = bernoulli(8220, 0.5, 0)
    clusters = [i // 3 for i in range(8220)]
    start = time.perf_counter()
    bootstrap_ci(values, n_resamples=500)
    bootstrap_ci(values, n_resamples=500, clusters=clusters)
    # 8,220 rows x 2,000 resamples (four times this) takes a few seconds
    assert time.perf_counter() - start < 10.0


# ---- McNemar ----------------------------------------------------------------------------------------------------


def table(n00, n01, n10, n11):
    a = [0] * n00 + [0] * n01 + [1] * n10 + [1] * n11
    b = [0] * n00 + [1] * n01 + [0] * n10 + [1] * n11
    return a, b


def test_mcnemar_chi_square_known_table():
    # the textbook table: 101 both right, 121 and 59 discordant, 33 both wrong
    a, b = table(33, 121, 59, 101)
    result = mcnemar(a, b)
    assert (result["b01"], result["b10"]) == (121, 59)
    assert result["statistic"] == pytest.approx(61**2 / 180)  # (|121 - 59| - 1)^2 / 180 = 20.672
    expected_p = 2 * (1 - NormalDist().cdf(math.sqrt(61**2 / 180)))
    assert result["p_value"] == pytest.approx(expected_p, rel=1e-6)
    assert result["p_value"] == pytest.approx(5.45e-6, rel=0.01)
    assert result["method"] == "chi2"


def test_mcnemar_exact_small_counts():
    a, b = table(10, 1, 6, 20)
    result = mcnemar(a, b)
    assert (result["b01"], result["b10"]) == (1, 6)
    assert result["p_value"] == pytest.approx(0.125)  # 2 * (C(7,0) + C(7,1)) / 2^7
    assert result["method"] == "exact"
    assert result["statistic"] == pytest.approx(16 / 7)
    swapped = mcnemar(b, a)
    assert (swapped["b01"], swapped["b10"]) == (6, 1) and swapped["p_value"] == result["p_value"]


def test_mcnemar_edge_cases():
    assert mcnemar([1, 0, 1], [1, 0, 1]) == {"b01": 0, "b10": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    balanced = mcnemar(*table(0, 5, 5, 0))
    assert balanced["p_value"] == 1.0  # capped: the two tails overlap
    assert mcnemar([True, False], [False, True])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar([1], [1, 0])


@settings(deadline=None, max_examples=50)
@given(b01=st.integers(0, 40), b10=st.integers(0, 40))
def test_mcnemar_p_value_is_a_probability_and_symmetric(b01, b10):
    a, b = table(3, b01, b10, 3)
    one, other = mcnemar(a, b), mcnemar(b, a)
    assert 0.0 <= one["p_value"] <= 1.0
    assert one["p_value"] == pytest.approx(other["p_value"])
    assert (one["b01"], one["b10"]) == (b01, b10)


def test_paired_bootstrap_gives_no_p_value_for_one_resampling_unit():
    # Every row in one image cluster: each resample is the whole benchmark again, so the formula's smallest p
    # (1 / (1 + n_resamples)) would claim a difference the data cannot show.
    one_cluster = paired_bootstrap([1.0, 1.0, 0.0], [0.0, 0.0, 0.0], clusters=["img"] * 3, n_resamples=200)
    assert one_cluster["p_value"] is None and one_cluster["units"] == 1
    assert paired_bootstrap([1.0], [0.0], n_resamples=200)["p_value"] is None
    two = paired_bootstrap([1.0, 1.0, 0.0], [0.0, 0.0, 0.0], clusters=["a", "a", "b"], n_resamples=200)
    assert two["units"] == 2 and two["p_value"] is not None
