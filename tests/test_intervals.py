"""dit/eval/intervals.py against independent computations: Wilson's interval as the roots of its
defining quadratic, the verdict rule on each side of a bound, the bias shift of a bootstrap, and
the pairing of differences and of timing ratios."""

import numpy as np
import pytest

from dit.eval.intervals import paired_difference, ratio_of_medians, shifted_interval, verdict, wilson


@pytest.mark.parametrize("k,n", [(0, 300), (2, 300), (43, 300), (150, 300), (300, 300), (7, 20)])
def test_wilson_is_the_roots_of_its_quadratic(k, n):
    # Wilson: the p with |p_hat - p| = z sqrt(p (1 - p) / n), i.e. (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0
    z, p_hat = 1.959963984540054, k / n
    roots = np.sort(np.roots([1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat]).real)
    assert wilson(k, n) == pytest.approx([max(roots[0], 0.0), min(roots[1], 1.0)], abs=1e-12)


def test_verdict_needs_the_whole_interval():
    assert verdict([0.13, 0.20], ">=", 0.12) == "met"
    assert verdict([0.108, 0.188], ">=", 0.12) == "not resolved"  # classifier guidance, DDPM at scale 30
    assert verdict([0.05, 0.11], ">=", 0.12) == "missed"
    assert verdict([0.001, 0.019], "<=", 0.02) == "met"
    assert verdict([0.002, 0.024], "<=", 0.02) == "not resolved"  # DDPM at scale 0
    assert verdict([0.021, 0.03], "<=", 0.02) == "missed"
    with pytest.raises(ValueError):
        verdict([0, 1], ">", 0.5)


def test_shifted_interval_moves_the_percentiles_by_the_bootstrap_bias():
    draws = np.random.default_rng(0).normal(10.0, 1.0, 100_000)
    lo, hi = shifted_interval(draws, 8.0)  # the draws sit 2 above the point: the interval moves down by 2
    assert lo == pytest.approx(8.0 - 1.96, abs=0.03) and hi == pytest.approx(8.0 + 1.96, abs=0.03)
    assert shifted_interval(draws, 1.0, clip=True)[0] == 0.0  # a distance is never below 0


def test_paired_difference_cancels_what_both_arms_share():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 5, 400)  # per-sample difficulty, the same in both arms
    a, b = shared + 0.3 + rng.normal(0, 0.1, 400), shared + rng.normal(0, 0.1, 400)
    point, (lo, hi) = paired_difference(a, b)
    assert point == pytest.approx(0.3, abs=0.03) and 0 < lo < point < hi and hi - lo < 0.05


def test_ratio_of_medians_pairs_alternated_calls():
    # Timings taken in alternation: call i of both runs under the same machine load (a slow stretch
    # doubles both). B takes 1.25x A's time on every call; a ratio that resampled the two arms
    # independently would spread with the load, the paired one does not.
    rng = np.random.default_rng(2)
    load = np.where(rng.random(15) < 0.4, 2.0, 1.0)
    a = load * (1 + rng.normal(0, 0.002, 15))
    b = 1.25 * load * (1 + rng.normal(0, 0.002, 15))
    ratio, (lo, hi) = ratio_of_medians(b, a)
    assert ratio == pytest.approx(np.median(b) / np.median(a)) and lo <= ratio <= hi
    assert 1.24 < lo and hi < 1.26
    unpaired = [np.median(rng.choice(b, 15)) / np.median(rng.choice(a, 15)) for _ in range(2000)]
    assert np.quantile(unpaired, 0.975) - np.quantile(unpaired, 0.025) > 0.5  # what pairing removes
    with pytest.raises(ValueError):
        ratio_of_medians([1.0], [1.0])
