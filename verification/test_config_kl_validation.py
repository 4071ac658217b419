"""ebmref.config's KL-group checks, exactly: the messages name the field's dotted path, and
kl.entropy_reference is bounded above by buffer.size (the reference set is drawn from the
buffer), with buffer.size itself accepted."""

from __future__ import annotations

import pytest

from ebmref.config import KLConfig, TrainConfig, with_overrides


@pytest.mark.parametrize("make,message", [
    (lambda: KLConfig(differentiable_steps=0),
     r"^kl\.differentiable_steps: must be an integer in \[1, ∞\], got 0$"),
    (lambda: KLConfig(entropy_weight=-0.5),
     r"^kl\.entropy_weight: must be a finite number >= 0, got -0\.5$"),
])
def test_kl_messages_name_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_entropy_reference_is_bounded_by_the_buffer_size():
    """With the entropy term on, more reference states than buffer.size is an error naming the
    field and the bound; exactly buffer.size is allowed."""
    base = with_overrides(TrainConfig(), {"buffer.size": 64, "run.batch_size": 16, "kl.weight": 1.0,
                                          "kl.entropy_weight": 0.1,
                                          "kl.entropy_reference": 64})
    with pytest.raises(ValueError,
                       match=r"^kl\.entropy_reference: must be an integer in \[1, 64\], got 65$"):
        with_overrides(base, {"kl.entropy_reference": 65})
    assert base.kl.entropy_reference == 64
