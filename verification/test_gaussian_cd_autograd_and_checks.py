"""ebmref.gaussian_cd's helpers and argument checks: autograd_of forwards positional and
keyword arguments to the loss and returns zeros (not None) for a parameter the loss does not
use, with the parameter's shape and dtype; chain_law refuses an unknown kernel and a separate
noise for the exact OU kernel, with their full messages.
"""

from __future__ import annotations

import re

import pytest
import torch

from ebmref import gaussian_cd as gcd

F64 = torch.float64
MU = torch.tensor([0.3, -0.5], dtype=F64)
TRIL = torch.tensor([[1.2, 0.0], [0.4, 0.7]], dtype=F64)
M0 = torch.tensor([2.0, -1.5], dtype=F64)
C0 = torch.tensor([[0.8, 0.3], [0.3, 1.5]], dtype=F64)


def test_autograd_of_gives_zeros_for_an_unused_parameter():
    """∂/∂L of a loss of μ alone is a zero tensor shaped like L (and vice versa)."""
    g_mu, g_l = gcd.autograd_of(lambda m, s: (m**2).sum(), MU, TRIL)
    assert torch.equal(g_mu, 2 * MU)
    assert g_l is not None and g_l.dtype == F64 and torch.equal(g_l, torch.zeros(2, 2, dtype=F64))
    g_mu, g_l = gcd.autograd_of(lambda m, s: s.sum(), MU, TRIL)
    assert torch.equal(g_mu, torch.zeros(2, dtype=F64)) and torch.equal(g_l, torch.ones(2, 2,
                                                                                        dtype=F64))


def test_autograd_of_forwards_keyword_arguments():
    """loss_fn(mu, L, *args, **kwargs): a keyword argument reaches the loss (Du's noise here,
    which changes the CD loss's gradient), the same as passing it by position."""
    args = (M0, C0, 3, "ula", 0.2)
    by_keyword = gcd.autograd_of(gcd.cd_loss, MU, TRIL, *args, noise=0.5)
    by_position = gcd.autograd_of(gcd.cd_loss, MU, TRIL, *args, 0.5)
    default = gcd.autograd_of(gcd.cd_loss, MU, TRIL, *args)
    for g_k, g_p, g_d in zip(by_keyword, by_position, default):
        assert torch.equal(g_k, g_p) and not torch.allclose(g_k, g_d)
    scaled = gcd.autograd_of(lambda m, s, w=1.0: w * m.sum(), MU, TRIL, w=3.0)
    assert torch.equal(scaled[0], torch.full((2,), 3.0, dtype=F64))


def test_chain_law_refuses_an_unknown_kernel():
    """Only "ou" and "ula" are kernels; the message names the argument and the choices."""
    msg = "kernel: must be one of ('ou', 'ula'), got 'mala'"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        gcd.chain_law(MU, TRIL, M0, C0, 2, "mala", 0.1)


def test_chain_law_ou_refuses_a_separate_noise():
    """The exact OU diffusion has no noise of its own (Du's σ is for "ula" only)."""
    msg = "noise: the exact OU kernel has no separate noise, got 0.5"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        gcd.chain_law(MU, TRIL, M0, C0, 2, "ou", 0.1, 0.5)
