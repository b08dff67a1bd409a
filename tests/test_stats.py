"""The statistics behind every comparison the docs make (tmkt_cli/analysis/stats.py)."""

import math

import numpy as np
import pytest

from tmkt_cli.analysis.heads import choose_head
from tmkt_cli.analysis.stats import (
    grouped_bootstrap,
    mean_interval,
    paired_interval,
    pooled_paired_interval,
    verdict,
)


def test_t_interval_of_three_seeds_is_mean_plus_minus_2_48_sd():
    iv = mean_interval([2.0, 4.0, 9.0])
    sd = np.std([2.0, 4.0, 9.0], ddof=1)
    assert iv.n == 3 and iv.mean == pytest.approx(5.0)
    assert iv.high - iv.mean == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)
    assert iv.low == pytest.approx(2 * iv.mean - iv.high)
    assert math.isnan(mean_interval([1.0]).low) and mean_interval([]).n == 0


def test_paired_interval_pairs_by_seed_and_ignores_unpaired_seeds():
    a = {42: 80.0, 1024: 82.0, 7: 90.0, 5: None}
    b = {42: 70.0, 1024: 74.0, 90210: 10.0, 5: 1.0}
    iv = paired_interval(a, b)
    assert iv.n == 2 and iv.mean == pytest.approx(9.0)
    pooled = pooled_paired_interval([(a, b), ({1: 3.0, 2: 5.0}, {1: 2.0, 2: 1.0})])
    assert pooled.n == 4 and pooled.mean == pytest.approx((10 + 8 + 1 + 4) / 4)
    # the same seed in two cells is one replicate: its differences are averaged first
    same_seeds = pooled_paired_interval([({1: 3.0, 2: 5.0}, {1: 2.0, 2: 1.0}),
                                         ({1: 7.0, 2: 1.0}, {1: 2.0, 2: 1.0})])
    assert same_seeds.n == 2 and same_seeds.mean == pytest.approx(((1 + 5) / 2 + (4 + 0) / 2) / 2)


def test_words_follow_the_interval():
    assert verdict(mean_interval([5.0, 6.0, 7.0])) == "ahead (n = 3)"
    assert verdict(mean_interval([-5.0, -6.0, -7.0])) == "behind (n = 3)"
    assert verdict(mean_interval([-1.0, 2.0, 0.5])) == "no difference detected (n = 3)"
    assert verdict(mean_interval([1.0])) == "n = 1: no interval"
    assert mean_interval([-1.0, 2.0, 0.5]).text() .startswith("+0.5 [")


def test_grouped_bootstrap_resamples_source_images_not_recordings():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(200), 3)  # three recordings of each source image
    # a predictor that is right or wrong on a whole image at once: its recordings are
    # perfectly dependent, so grouping must widen the interval against per-recording draws
    per_image = rng.random(200) < 0.5
    a = np.repeat(per_image, 3)
    b = np.zeros_like(a)
    grouped = grouped_bootstrap(a, b, groups, seed=0)
    ungrouped = grouped_bootstrap(a, b, np.arange(a.size), seed=0)
    assert grouped.n == 200 and ungrouped.n == 600
    assert grouped.mean == pytest.approx(100 * a.mean())
    assert grouped.low < grouped.mean < grouped.high
    assert (grouped.high - grouped.low) > 1.4 * (ungrouped.high - ungrouped.low)
    assert grouped_bootstrap(a, b, groups, seed=0) == grouped  # seeded: reproducible
    # -1 (no source image) is a group of one each
    assert grouped_bootstrap(a, b, np.full(a.size, -1)).n == 600
    with pytest.raises(ValueError, match="shape"):
        grouped_bootstrap(a, b[:-1], groups)


def test_head_rule_takes_the_better_validation_head_and_the_event_head_on_a_tie():
    assert choose_head("validation", 0.80, 0.85) == "static"
    assert choose_head("validation", 0.85, 0.85) == "event"
    assert choose_head("validation", 0.90, 0.85) == "event"
    assert choose_head("validation", None, 0.99) == "event"  # no validation split
    assert choose_head("static", 0.99, 0.10) == "static"
    assert choose_head("event", 0.10, 0.99) == "event"
    with pytest.raises(ValueError, match="unknown head rule"):
        choose_head("best", 0.1, 0.2)
