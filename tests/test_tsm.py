"""Time-step mixup: the trigger probability, the truncation law, masks and mixing."""

from __future__ import annotations

import math

import pytest
import torch

from tmkt_cli.methods.tsm import (
    event_frame_mask,
    expected_event_fraction,
    realised_event_ratio,
    sample_truncation,
    solve_trigger_probability,
    time_step_mixup,
    truncation_distribution,
)


@pytest.mark.parametrize("time_steps, r_m, p", [(10, 0.2, 0.0410), (10, 0.5, 0.1312),
                                                (10, 0.8, 0.3292), (6, 0.5, 0.1954)])
def test_trigger_probability_matches_the_papers_values(time_steps, r_m, p):
    assert solve_trigger_probability(r_m, time_steps) == pytest.approx(p, abs=1e-4)


@pytest.mark.parametrize("time_steps", [1, 2, 6, 10, 12, 50])
@pytest.mark.parametrize("r_m", [0.0, 1e-6, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0])
def test_solved_probability_gives_the_target_fraction(time_steps, r_m):
    p = solve_trigger_probability(r_m, time_steps)
    assert 0.0 <= p <= 1.0
    assert expected_event_fraction(p, time_steps) == pytest.approx(r_m, abs=1e-10)


def test_closed_form_ends():
    assert solve_trigger_probability(0.0, 10) == 0.0
    assert solve_trigger_probability(1.0, 10) == 1.0
    assert solve_trigger_probability(0.37, 1) == 0.37  # one step: E[X]/T = p


def test_expected_fraction_is_the_sum_in_the_paper():
    for T in (1, 3, 10):
        for p in (1e-9, 0.01, 0.2, 0.9):
            direct = sum((T + 1 - t) * p * (1 - p) ** (t - 1) for t in range(1, T + 1)) / T
            assert expected_event_fraction(p, T) == pytest.approx(direct, rel=1e-9, abs=1e-15)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError):
        solve_trigger_probability(1.5, 10)
    with pytest.raises(ValueError):
        solve_trigger_probability(0.5, 0)
    with pytest.raises(ValueError):
        sample_truncation(4, 10, -0.1)


def test_truncation_follows_the_truncated_geometric_law():
    T, n = 10, 40_000
    p = solve_trigger_probability(0.5, T)
    t_star = sample_truncation(n, T, p, torch.Generator().manual_seed(0))
    assert t_star.dtype == torch.int64 and t_star.shape == (n,)
    assert int(t_star.min()) >= 0 and int(t_star.max()) <= T
    pmf = truncation_distribution(p, T)
    assert float(pmf.sum()) == pytest.approx(1.0)
    freq = torch.bincount(t_star, minlength=T + 1).double() / n
    # Each frequency is a mean of n Bernoulli(pmf) draws: 5 standard errors is a bound a
    # correct sampler exceeds with probability ~1e-6 per bin (and the seed is fixed).
    se = (pmf * (1 - pmf) / n).sqrt()
    assert torch.all((freq - pmf).abs() <= 5 * se + 1e-12)


@pytest.mark.parametrize("time_steps, r_m", [(10, 0.2), (10, 0.5), (10, 0.8), (6, 0.5)])
def test_realised_ratio_matches_the_target_on_average(time_steps, r_m):
    n = 20_000
    p = solve_trigger_probability(r_m, time_steps)
    t_star = sample_truncation(n, time_steps, p, torch.Generator().manual_seed(1))
    ratio = realised_event_ratio(event_frame_mask(t_star, time_steps))
    # Tolerance: 5 standard errors of the mean, from the exact variance of X/T under the
    # truncated geometric law (X = T - t*), i.e. about 0.01 here.
    pmf = truncation_distribution(p, time_steps)
    x = (time_steps - torch.arange(time_steps + 1, dtype=torch.float64)) / time_steps
    mean = float((pmf * x).sum())
    sd = math.sqrt(float((pmf * (x - mean) ** 2).sum()))
    assert mean == pytest.approx(r_m, abs=1e-9)
    assert float(ratio.double().mean()) == pytest.approx(r_m, abs=5 * sd / math.sqrt(n))


def test_sampling_is_repeatable_with_a_seeded_generator():
    a = sample_truncation(64, 10, 0.2, torch.Generator().manual_seed(7))
    b = sample_truncation(64, 10, 0.2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_trigger_probability_extremes():
    assert torch.all(sample_truncation(32, 8, 0.0) == 8)  # never triggers: all static
    assert torch.all(sample_truncation(32, 8, 1.0) == 0)  # always at once: all events


def test_mask_is_a_static_prefix_then_an_event_suffix():
    t_star = torch.tensor([0, 3, 5, 2])
    mask = event_frame_mask(t_star, 5)
    assert mask.shape == (5, 4) and mask.dtype == torch.bool
    expected = torch.tensor([[t >= s for s in (0, 3, 5, 2)] for t in range(5)])
    assert torch.equal(mask, expected)
    assert torch.equal(realised_event_ratio(mask), torch.tensor([1.0, 0.4, 0.0, 0.6]))


def test_mixup_takes_whole_frames_never_a_blend():
    T, B = 6, 5
    image = torch.rand(B, 2, 4, 4) + 10.0  # static values and event values cannot collide
    static = image.unsqueeze(0).expand(T, *image.shape)  # the loaders' repeated image
    events = torch.rand(T, B, 2, 4, 4)
    t_star = sample_truncation(B, T, 0.3, torch.Generator().manual_seed(3))
    mask = event_frame_mask(t_star, T)
    mixed = time_step_mixup(static, events, mask)
    assert mixed.shape == events.shape
    for b in range(B):
        for t in range(T):
            source = events if t >= int(t_star[b]) else static
            assert torch.equal(mixed[t, b], source[t, b])


def test_mixup_checks_shapes():
    with pytest.raises(ValueError):
        time_step_mixup(torch.zeros(4, 2, 3), torch.zeros(4, 3, 3), torch.zeros(4, 2, dtype=bool))
    with pytest.raises(ValueError):
        time_step_mixup(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3), torch.zeros(2, 4, dtype=bool))
