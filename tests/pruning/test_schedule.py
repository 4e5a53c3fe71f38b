"""The gradual schedule's arithmetic: cubic shares, channels kept (cut sizes) per step, epochs."""

from __future__ import annotations

import pytest

from edgeprune.pruning.schedule import cubic_fractions, kept_per_step, step_epochs


def test_cubic_fractions_front_load_the_cuts_and_end_at_the_plan():
    assert cubic_fractions(3) == pytest.approx([1 - (2 / 3) ** 3, 1 - (1 / 3) ** 3, 1.0])
    assert cubic_fractions(3) == pytest.approx([0.7037, 0.9630, 1.0], abs=1e-4)
    assert cubic_fractions(1) == [1.0]
    shares = cubic_fractions(5)
    cuts = [b - a for a, b in zip([0.0, *shares], shares, strict=False)]
    assert cuts == sorted(cuts, reverse=True)  # each cut smaller than the one before
    with pytest.raises(ValueError):
        cubic_fractions(0)


def test_channels_kept_per_step_and_the_cut_sizes():
    # digits at 75 %: 24 → 8, 64 → 16, 128 → 32; the classifier (10) is not cut
    channels = {"stem": 24, "down2": 64, "down3": 128, "classifier": 10}
    final = {"stem": 8, "down2": 16, "down3": 32, "classifier": 10}
    steps = kept_per_step(channels, final, 3)
    # removals 16/48/96 × 0.7037, 0.9630, 1 rounded half up: 11/34/68, 15/46/92, 16/48/96
    assert steps == [{"stem": 13, "down2": 30, "down3": 60, "classifier": 10},
                     {"stem": 9, "down2": 18, "down3": 36, "classifier": 10},
                     final]
    cut_sizes = [[a[k] - b[k] for k in channels] for a, b in zip([channels, *steps], steps,
                                                                   strict=False)]
    assert cut_sizes == [[11, 34, 68, 0], [4, 12, 24, 0], [1, 2, 4, 0]]


def test_the_last_cut_is_the_plan_and_counts_never_rise():
    channels = {"a": 7, "b": 3, "c": 100, "d": 5}
    final = {"a": 1, "b": 2, "c": 13}  # d is missing: not cut
    for k in (2, 3, 4, 7, 10):
        steps = kept_per_step(channels, final, k)
        assert steps[-1] == {"a": 1, "b": 2, "c": 13, "d": 5}
        for before, after in zip([channels, *steps], steps, strict=False):
            assert all(final.get(n, channels[n]) <= after[n] <= before[n] for n in channels)


@pytest.mark.parametrize(("epochs", "steps", "shares"), [
    (10, 3, [3, 3, 4]), (9, 3, [3, 3, 3]), (3, 3, [1, 1, 1]), (10, 4, [2, 2, 3, 3]),
    (7, 2, [3, 4])])
def test_epochs_are_shared_equally_with_the_rest_on_the_last_step(epochs, steps, shares):
    got, left = [], epochs
    for t in range(steps):
        got.append(step_epochs(left, steps - t))
        left -= got[-1]
    assert got == shares and sum(got) == epochs


def test_epochs_an_early_stopped_step_did_not_use_go_to_the_later_steps():
    first = step_epochs(12, 3)  # 4, of which the step ran 2 before early stopping
    assert first == 4
    assert step_epochs(12 - 2, 2) == 5  # 10 left over 2 steps
    assert step_epochs(5, 1) == 5
