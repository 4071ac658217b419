"""G independent energies trained as one vectorised model (seeds of one experiment).

Small energies on a CPU spend their time in per-operation overhead, not arithmetic: ten seeds
of a 3×64 MLP cost about as much per update as one when their parameters are stacked and every
operation runs once on all of them. :class:`EnsembleEnergy` stacks G modules of one
architecture (``torch.func.stack_module_state``) and evaluates member g on the g-th of G equal
consecutive blocks of a batch (``torch.func.vmap`` of ``functional_call``);
:class:`StackedMLPEnergy` does the same for :class:`ebmref.nets.MLPEnergy` members with batched
matrix products (``torch.baddbmm``), about twice as fast on a CPU. Everything
row-wise in the library — the samplers (ULA and per-chain MALA), transitions, the contrastive
loss's means — works unchanged on the G·B chains, and what is not row-wise knows the member
count ``n_members``: the replay buffer keeps one buffer per member, the KL loss's entropy is
estimated per member, :func:`ebmref.training.train_step` sums the members' losses (each member's
gradient is then its own run's gradient), and ``run.batch_size``, ``buffer.size`` and
``kl.n_chains`` count per member.

A member is not bit-for-bit the single-model run of its seed: the members share one generator,
and batched matrix products round differently from single ones. Each member is an independent
replicate of the method (its own initialisation and noise), which is what a comparison over
seeds needs. :meth:`EnsembleEnergy.member` returns member g as a standalone module.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ebmref.energy import Energy
from ebmref.nets import ACTIVATIONS, MLPEnergy


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names may not contain dots


class EnsembleEnergy(Energy):
    """E(x)_i = E_{g(i)}(x_i) with g(i) the block of row i: G members of one architecture.

    Args:
        members: G ≥ 1 energies of identical structure (e.g. the same class built under G
            seeds); their parameters and buffers are copied into stacked tensors (G, ...).
    """

    def __init__(self, members: Sequence[Energy]):
        super().__init__()
        if len(members) == 0 or not all(isinstance(m, Energy) for m in members):
            raise ValueError("members: expected a non-empty sequence of ebmref Energy modules")
        shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in members}
        if len(shapes) != 1:
            raise ValueError("members: all members must have the same architecture")
        params, buffers = stack_module_state(list(members))
        self.n_members = len(members)
        self.event_shape = members[0].event_shape
        self._names = list(params)
        self.stacked = nn.ParameterDict({_key(k): nn.Parameter(v.detach().clone())
                                         for k, v in params.items()})
        for k, v in buffers.items():
            self.register_buffer("buf__" + _key(k), v.detach().clone())
        self._buffer_names = list(buffers)
        # A parameter-free template the stacked tensors are plugged into (kept out of the
        # module tree so it is neither trained nor saved).
        self.__dict__["_template"] = copy.deepcopy(members[0]).to("meta")

    def _member_state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = {k: self.stacked[_key(k)] for k in self._names}
        buffers = {k: getattr(self, "buf__" + _key(k)) for k in self._buffer_names}
        return params, buffers

    def forward(self, x: Tensor) -> Tensor:
        g = self.n_members
        if x.shape[0] % g:
            raise ValueError(f"x: {x.shape[0]} rows do not split into n_members={g} blocks")
        self._check_batch(x)
        params, buffers = self._member_state()
        template = self.__dict__["_template"]

        def one(p, b, xb):
            return functional_call(template, (p, b), (xb,))

        return vmap(one)(params, buffers, x.view(g, -1, *x.shape[1:])).reshape(-1)

    def member(self, g: int) -> Energy:
        """Member g as a standalone module (a copy, on this ensemble's device and dtype)."""
        if not (isinstance(g, int) and 0 <= g < self.n_members):
            raise ValueError(f"g: must be a member index in [0, {self.n_members - 1}], got {g!r}")
        ref = next(iter(self.stacked.values()))
        module = copy.deepcopy(self.__dict__["_template"]).to_empty(device=ref.device)
        params, buffers = self._member_state()
        module.load_state_dict({k: v[g].detach().clone()
                                for k, v in {**params, **buffers}.items()})
        return module.to(dtype=ref.dtype)


class StackedMLPEnergy(Energy):
    """G MLP energies (:class:`ebmref.nets.MLPEnergy`, without spectral norm) as stacked weight
    tensors: layer ℓ maps the (G, B, ·) block activations with W_ℓ (G, in, out) and b_ℓ
    (G, 1, out) in one ``baddbmm``. Same contract as :class:`EnsembleEnergy`."""

    def __init__(self, members: Sequence[MLPEnergy]):
        super().__init__()
        if len(members) == 0 or not all(isinstance(m, MLPEnergy) for m in members):
            raise ValueError("members: expected a non-empty sequence of MLPEnergy modules")
        first = members[0]
        linears = [[m for m in mlp.net if isinstance(m, nn.Linear)] for mlp in members]
        if any(hasattr(lin, "parametrizations") for ls in linears for lin in ls):
            raise ValueError("members: spectrally normalised MLPs are not supported here; "
                             "use EnsembleEnergy")
        if len({(mlp.activation, tuple(tuple(lin.weight.shape) for lin in ls))
                for mlp, ls in zip(members, linears)}) != 1:
            raise ValueError("members: all members must have the same architecture")
        self.n_members, self.event_shape = len(members), first.event_shape
        self.activation = first.activation
        self.act = ACTIVATIONS[first.activation]()
        self.weights = nn.ParameterList([nn.Parameter(torch.stack(
            [ls[i].weight.detach().T for ls in linears]).clone()) for i in range(len(linears[0]))])
        self.biases = nn.ParameterList([nn.Parameter(torch.stack(
            [ls[i].bias.detach()[None] for ls in linears]).clone())
            for i in range(len(linears[0]))])

    def forward(self, x: Tensor) -> Tensor:
        g = self.n_members
        if x.shape[0] % g:
            raise ValueError(f"x: {x.shape[0]} rows do not split into n_members={g} blocks")
        self._check_batch(x)
        h = x.view(g, -1, x.shape[-1])
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = self.act(h)
        return h.reshape(-1)

    def member(self, g: int) -> MLPEnergy:
        """Member g as a standalone :class:`ebmref.nets.MLPEnergy` (a copy)."""
        if not (isinstance(g, int) and 0 <= g < self.n_members):
            raise ValueError(f"g: must be a member index in [0, {self.n_members - 1}], got {g!r}")
        w0 = self.weights[0]
        mlp = MLPEnergy(w0.shape[1], hidden=w0.shape[2], depth=len(self.weights) - 1,
                        activation=self.activation).to(device=w0.device, dtype=w0.dtype)
        with torch.no_grad():
            lins = [m for m in mlp.net if isinstance(m, nn.Linear)]
            for lin, w, b in zip(lins, self.weights, self.biases):
                lin.weight.copy_(w[g].T)
                lin.bias.copy_(b[g, 0])
        return mlp

