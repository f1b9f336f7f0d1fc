"""erc_core.band.Band: the one band check and the one keep / fell / rose rule, on tensors, arrays and scalars."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from erc_core import PAPER_BAND, Band, erc_mask
from erc_core.losses import entropy_ratio


def test_paper_band_and_pairs():
    assert tuple(PAPER_BAND) == (0.95, 1.05) and Band.of((0.95, 1.05)) == PAPER_BAND
    assert Band.of(PAPER_BAND) is PAPER_BAND and str(Band(0.8, math.inf)) == "(0.8, inf)"


@pytest.mark.parametrize("bounds", [(1.0, 1.2), (-0.1, 1.1), (0.9, 1.0), (0.9, math.nan), (math.nan, 1.1),
                                    (1.2, 0.8)])
def test_bad_bands_name_the_argument_and_the_rule(bounds):
    with pytest.raises(ValueError, match=r"my_band must satisfy 0 <= low < 1 < high"):
        Band.of(bounds, "my_band")


@pytest.mark.parametrize("bounds", [0.95, (0.9,), (0.9, 1.1, 1.2), ("a", "b")])
def test_not_a_pair_is_named(bounds):
    with pytest.raises(ValueError, match=r"my_band must be a pair"):
        Band.of(bounds, "my_band")


def test_edges_are_gated_strictly():
    low, high = 0.95, 1.05
    rho = torch.tensor([np.nextafter(low, 0), low, np.nextafter(low, 1), 1.0, np.nextafter(high, 0), high,
                        np.nextafter(high, 2)], dtype=torch.float64)
    band = Band(low, high)
    assert band.kind(rho).tolist() == [1, 1, 0, 0, 0, 2, 2]
    assert band.keep(rho).tolist() == [False, False, True, True, True, False, False]


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 0.999), st.floats(1.001, 50.0),
       st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=30), st.lists(st.floats(1e-6, 10.0), min_size=1,
                                                                        max_size=30))
def test_keep_fell_rose_partition_and_match_erc_mask(low, high, h_new, h_old):
    n = min(len(h_new), len(h_old))
    h, h0 = torch.tensor(h_new[:n]), torch.tensor(h_old[:n])
    band = Band(low, high)
    rho = entropy_ratio(h, h0)
    keep, fell, rose = band.keep(rho), band.fell(rho), band.rose(rho)
    assert bool((keep.int() + fell.int() + rose.int() == 1).all())  # each token in exactly one class
    assert torch.equal(keep, erc_mask(h, h0, torch.ones(n, dtype=torch.bool), band))
    assert torch.equal(band.gated(rho), ~keep)
    # numpy and scalars give the same answer as tensors
    assert band.kind(rho.numpy()).tolist() == band.kind(rho).tolist() == [int(band.kind(float(r))) for r in rho]


def test_no_gate_band_keeps_every_positive_ratio():
    rho = torch.tensor([1e-9, 0.5, 1.0, 7.0, 1e9])
    assert bool(Band(0.0, math.inf).keep(rho).all())
