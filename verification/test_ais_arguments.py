"""Arguments of ebmref.ais: reverse_ais's default step size (0.1, as for ``ais``) and its
message for samples that are not exact target samples (their shape when a tensor);
schedule's default kind (sigmoid) and the open range of the geometric ``beta_min``."""

from __future__ import annotations

import pytest
import torch

from ebmref.ais import reverse_ais, schedule
from ebmref.energy import Gaussian

F64 = torch.float64


def _setup():
    target = Gaussian([0.3, -0.2], [[1.0, 0.2], [0.2, 0.5]], dtype=F64)
    base = Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    return target, base, target.sample(8, torch.Generator().manual_seed(0))


def test_reverse_ais_default_step_size_is_that_of_ais():
    """Without step_size every kernel runs with λ = 0.1 (the default shared with ``ais``)."""
    target, base, x = _setup()
    used = []

    def kernel(energy, xs, step, n, generator):
        used.append(step)
        return xs, torch.ones(xs.shape[0], dtype=xs.dtype)

    res = reverse_ais(target, base, x, schedule(3, "linear"), kernel=kernel)
    assert used == [0.1, 0.1, 0.1]
    assert res.step_sizes.tolist() == [0.1] * 4


def test_reverse_ais_names_the_shape_of_bad_samples():
    """A tensor of the wrong size is reported by its shape, anything else by its type."""
    target, base, x = _setup()
    b = schedule(3, "linear")
    head = r"^samples: expected exact target samples \(N >= 2, 2\), got "
    with pytest.raises(ValueError, match=head + r"\(1, 2\)$"):
        reverse_ais(target, base, x[:1], b)
    with pytest.raises(ValueError, match=head + r"<class 'list'>$"):
        reverse_ais(target, base, x.tolist(), b)


def test_schedule_default_kind_is_sigmoid_and_beta_min_below_one():
    """schedule(K) is the sigmoid path (closed form with δ = 4); beta_min = 1 would make the
    geometric path constant, and is refused."""
    k = torch.arange(5, dtype=F64)
    s = torch.sigmoid(4.0 * (2.0 * k / 4 - 1.0))
    assert schedule(4).tolist() == pytest.approx(((s - s[0]) / (s[-1] - s[0])).tolist(),
                                                 abs=1e-15)
    with pytest.raises(ValueError, match=r"^beta_min: must lie in \(0, 1\), got 1\.0$"):
        schedule(4, "geometric", beta_min=1.0)
