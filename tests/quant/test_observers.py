"""Observers: streaming statistics that stay small, and range methods that clip outliers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from deploycomp.quant.observers import BINS, Observer, compute_range


def _feed(obs: Observer, batches):
    for b in batches:
        obs.update(b)
    return obs


def test_minmax_is_exact_across_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1, 1000).astype(np.float32) for i in range(5)]
    obs = _feed(Observer(), batches)
    lo, hi = compute_range(obs, "minmax")
    allv = np.concatenate(batches)
    assert (lo, hi) == (pytest.approx(allv.min()), pytest.approx(allv.max()))
    assert obs.hist.sum() == allv.size


def test_mean_minmax_averages_each_samples_extremes():
    """NNCF's default for activations: one loud sample widens ``minmax`` to its peak, but
    moves ``mean_minmax`` only by its share of the samples."""
    quiet = [np.linspace(-1, 1, 101, dtype=np.float32)] * 3
    loud = np.linspace(-2, 9, 101, dtype=np.float32)
    obs = _feed(Observer(), [*quiet, loud])
    assert compute_range(obs, "minmax") == (pytest.approx(-2.0), pytest.approx(9.0))
    assert compute_range(obs, "mean_minmax") == (pytest.approx(-1.25), pytest.approx(3.0))


def test_widening_keeps_the_distribution():
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, 200_000).astype(np.float32)
    streamed = _feed(Observer(), np.array_split(np.sort(data), 50))  # range grows every batch
    one_shot = _feed(Observer(), [data])
    for method in ("percentile",):
        a, b = compute_range(streamed, method), compute_range(one_shot, method)
        assert a == pytest.approx(b, abs=0.05)


def test_mse_clips_inside_the_gaussian_tail():
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1, 100_000).astype(np.float32)
    obs = _feed(Observer(), [data])
    lo, hi = compute_range(obs, "mse")
    assert 2.0 < hi < float(data.max()) and -float(data.max()) < lo < -2.0


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_outliers_are_clipped(method):
    rng = np.random.default_rng(2)
    data = np.concatenate([rng.normal(0, 1, 100_000), [80.0, -75.0]]).astype(np.float32)
    lo, hi = compute_range(_feed(Observer(), [data]), method)
    assert 2.0 < hi < 20.0 and -20.0 < lo < -2.0, (lo, hi)
    mm = compute_range(_feed(Observer(), [data]), "minmax")
    assert mm == (pytest.approx(-75.0), pytest.approx(80.0))


def test_memory_does_not_grow_with_samples():
    obs = Observer()
    rng = np.random.default_rng(3)
    obs.update(rng.normal(size=10_000).astype(np.float32))
    size = obs.hist.nbytes
    for _ in range(200):
        obs.update(rng.normal(size=10_000).astype(np.float32) * 3)
    assert obs.hist.nbytes == size == BINS * 8
    assert sys.getsizeof(obs.__dict__) < 4096


def test_non_finite_values_are_ignored_and_empty_observer_refuses():
    obs = Observer()
    with pytest.raises(ValueError, match="saw no data"):
        compute_range(obs, "minmax")
    obs.update(np.array([1.0, np.nan, np.inf, -2.0], np.float32))
    assert compute_range(obs, "minmax") == (-2.0, 1.0)


@pytest.mark.parametrize("value", [3.0e7, -5.0e9, 1.0e-30])
def test_a_constant_first_batch_of_any_magnitude(value):
    """A tensor whose first calibration batch is constant and large (an audio power
    spectrum's DC bin) once crashed calibration with a float division by zero: the
    histogram's width vanished next to its magnitude."""
    obs = Observer()
    obs.update(np.full(64, value, np.float32))
    obs.update(np.full(64, value, np.float32))
    for method in ("minmax", "percentile", "mse", "entropy"):
        lo, hi = compute_range(obs, method)
        assert np.isfinite([lo, hi]).all() and lo <= hi
    obs.update(np.linspace(0, 2 * abs(value), 64, dtype=np.float32))  # and it still widens
    assert compute_range(obs, "minmax") == (min(0.0, float(np.float32(value))), float(np.float32(2 * abs(value))))


def test_the_cli_offers_every_range_method():
    from deploycomp.cli import build
    from deploycomp.quant.observers import RANGE_METHODS

    option = next(p for p in build.params if p.name == "int8_range")
    assert set(option.type.choices) == {"auto", *RANGE_METHODS}


def test_a_fleet_spec_takes_every_range_method():
    import typing

    from deploycomp.fleet.spec import Options
    from deploycomp.quant.observers import RANGE_METHODS

    field = Options.model_fields["int8_range"].annotation
    literal = next(a for a in typing.get_args(field) if typing.get_origin(a) is typing.Literal)
    assert set(typing.get_args(literal)) == {"auto", *RANGE_METHODS}
