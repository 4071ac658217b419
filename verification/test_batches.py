"""The data minibatches x⁺ (ebmref.batches.DataSource): rows of a tensor drawn with the run's
generator, or the items of an iterable; on the run's device and dtype. Deterministic."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ebmref.batches import DataSource


def test_tensor_batches_are_rows_drawn_with_the_generator():
    data = torch.arange(20.0).view(10, 2)
    source = DataSource(data, 4, "cpu", torch.float64)
    assert source.tensor.dtype == torch.float64 and source.iterable is None
    g = torch.Generator().manual_seed(3)
    batch = source.next(g)
    idx = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(3))
    assert batch.dtype == torch.float64 and torch.equal(batch, data[idx].double())
    # Every row can be drawn (indices cover 0..N−1, not 1..N).
    rows = torch.cat([source.next(g)[:, 0] for _ in range(100)]).unique()
    assert torch.equal(rows, torch.arange(0.0, 20.0, 2.0, dtype=torch.float64))


def test_batches_go_to_the_runs_device():
    # The meta device stands in for an accelerator: the data and every batch must move there.
    source = DataSource(torch.zeros(5, 2), 3, "meta", torch.float32)
    assert source.tensor.device.type == "meta"
    assert source.next(torch.Generator()).device.type == "meta"
    items = DataSource([torch.zeros(2, 2, dtype=torch.float64)], 2, "meta", torch.float32)
    batch = items.next(torch.Generator())
    assert batch.device.type == "meta" and batch.dtype == torch.float32


def test_iterables_restart_and_pairs_keep_x():
    xs = [torch.full((2, 3), float(i), dtype=torch.float64) for i in range(3)]
    source = DataSource([(x, torch.zeros(2)) for x in xs], 2, "cpu", torch.float32)
    seen = [float(source.next(torch.Generator())[0, 0]) for _ in range(7)]
    assert seen == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    assert source.next(torch.Generator()).dtype == torch.float32
    plain = DataSource([[xs[1], torch.ones(2)]], 2, "cpu", torch.float64)  # a list pair too
    assert torch.equal(plain.next(torch.Generator()), xs[1])


@pytest.mark.parametrize("data", [torch.zeros(5), torch.zeros(0, 3), torch.zeros(()),
                                  torch.zeros(0)])
def test_bad_tensors_name_the_data_and_its_shape(data):
    with pytest.raises(ValueError, match=r"^data: .*" + re.escape(str(tuple(data.shape)))):
        DataSource(data, 2, "cpu", torch.float32)


def test_a_single_row_and_one_coordinate_are_data():
    assert DataSource(torch.zeros(1, 3), 2, "cpu", torch.float32).tensor.shape == (1, 3)
    assert DataSource(torch.zeros(4, 1), 2, "cpu", torch.float32).tensor.shape == (4, 1)


def test_non_finite_data_and_other_types_are_refused():
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^data: must be finite \(no NaN or inf\)"):
            DataSource(torch.tensor([[0.0, bad]]), 2, "cpu", torch.float32)
    with pytest.raises(ValueError, match=r"^data: .*int"):
        DataSource(3, 2, "cpu", torch.float32)
