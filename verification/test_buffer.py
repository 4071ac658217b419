"""Tests of the replay buffer (ebmref/buffer.py): fill policies, re-initialisation rates
(calibrated binomial tests), FIFO order, reservoir uniformity, persistence, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.buffer import ReplayBuffer, UniformNoise
from verification.stats import ALPHA, assert_pvalues

SENTINEL = 10.0  # outside the noise box [0, 1] and the data range: marks untouched entries


def _binom_p(k: int, n: int, p: float) -> float:
    return float(stats.binomtest(k, n, p).pvalue)


def _binom_power(n: int, p0: float, p1: float, alpha: float) -> float:
    """Power of the two-sided exact binomial test of p0 when the truth is p1 (normal approx.
    of the acceptance region, exact binomial tail for the rejection probability)."""
    lo = stats.binom.ppf(alpha / 2, n, p0)
    hi = stats.binom.isf(alpha / 2, n, p0)
    return float(stats.binom.cdf(lo - 1, n, p1) + stats.binom.sf(hi, n, p1))


def test_noise_fill_and_box():
    g = torch.Generator().manual_seed(1)
    buf = ReplayBuffer(50, "noise", noise_fn=UniformNoise((3,), -2.0, 5.0, torch.float64))
    x, idx = buf.sample(20, g)
    assert x.shape == (20, 3) and idx.shape == (20,) and len(buf) == 50
    assert buf.storage.dtype == torch.float64
    assert (buf.storage >= -2).all() and (buf.storage < 5).all()


def test_data_policies_fill_from_data_and_pcd_never_reinitialises(rng):
    data = torch.rand(30, 2, generator=rng, dtype=torch.float64)  # floats in [0, 1), not uint8
    buf = ReplayBuffer(40, "data", reinit_prob=1.0, data_fraction=1.0)
    buf.sample(5, rng, data=data)
    rows = {tuple(r.tolist()) for r in data}
    assert all(tuple(r.tolist()) in rows for r in buf.storage)  # exact values kept
    buf.storage.fill_(SENTINEL)
    for _ in range(20):
        x, _idx = buf.sample(10, rng, data=data)
        assert (x == SENTINEL).all()  # PCD: starts are always stored chain ends


@pytest.mark.stochastic
@pytest.mark.parametrize("init,prob", [("noise", 0.05), ("true_cd", 0.1)])
def test_reinitialisation_rate_is_binomial(rng, init, prob):
    """Each read start is replaced (by noise / a data point) independently with probability
    p: the count over n starts is Binomial(n, p). α = 1e-6 (one p-value); the test asserts it
    detects a rate off by 25 % (p·1.25) with probability ≥ 1 − 1e-3, and the same assertion
    fails for a buffer whose rate really is 1.5 p (broken variant)."""
    n_reads, batch = 400, 100
    n = n_reads * batch
    assert _binom_power(n, prob, 1.25 * prob, ALPHA) >= 1 - 1e-3
    assert _binom_power(n, prob, 0.75 * prob, ALPHA) >= 1 - 1e-3

    def count(true_prob):
        kw = {"reinit_prob": true_prob} if init == "noise" else {"data_fraction": true_prob}
        buf = ReplayBuffer(500, init, noise_fn=UniformNoise((2,)), **kw)
        data = torch.rand(100, 2, generator=rng)
        buf.sample(1, rng, data=data)
        buf.storage.fill_(SENTINEL)
        replaced = 0
        for _ in range(n_reads):
            x, _ = buf.sample(batch, rng, data=data)
            replaced += int((x[:, 0] != SENTINEL).sum())
        return replaced

    k = count(prob)
    assert_pvalues({"binomial": _binom_p(k, n, prob)}, ALPHA)
    with pytest.raises(AssertionError):
        assert_pvalues({"binomial": _binom_p(count(1.5 * prob), n, prob)}, ALPHA)


def test_fifo_overwrites_oldest_in_order():
    buf = ReplayBuffer(5, "noise", noise_fn=UniformNoise((1,)), replacement="fifo")
    buf.sample(1, torch.Generator().manual_seed(0))
    for start in (0, 3, 6):
        buf.push(torch.arange(start, start + 3, dtype=torch.float32)[:, None])
    # pushes 0..8 into 5 slots: slots hold [5, 6, 7, 8, 4]
    assert buf.storage[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0, 4.0]
    assert buf.ptr == 4 and buf.n_seen == 5 + 9


RES_CAP, RES_PUSHED, RES_REPS = 8, 24, 3600  # 8 initial entries + 24 pushed, in batches of 8


class _OffByOneReservoir(ReplayBuffer):
    """Broken: the acceptance count one too small (c − 1): the 8 initial entries are kept with
    probability 7/31 = 0.226 instead of 0.25, the 24 pushed ones with 8/31 = 0.258."""

    def _reservoir_counts(self, n: int) -> torch.Tensor:
        return self.n_seen + torch.arange(n, device=self.device, dtype=torch.float64)


def _initial_kept_pmf(cap: int, pushed: int, count_offset: int = 0) -> np.ndarray:
    """Exact law of the number of initial entries still in a full reservoir after ``pushed``
    single pushes (sequential; a batch with "later wins" is the same): the state with count c
    is accepted with probability min(1, cap/(c + count_offset)) and then replaces a uniform
    slot, an initial entry with probability j/cap when j of them remain."""
    pmf = np.zeros(cap + 1)
    pmf[cap] = 1.0
    for c in range(cap + 1, cap + pushed + 1):
        a = min(1.0, cap / (c + count_offset))
        lost = a * np.arange(cap + 1) / cap
        pmf = pmf * (1 - lost) + np.append(pmf[1:] * lost[1:], 0.0)
    return pmf


def _sum_pmf(pmf: np.ndarray, reps: int) -> np.ndarray:
    """Law of the sum of ``reps`` iid copies (FFT of the reps-fold convolution)."""
    size = reps * (len(pmf) - 1) + 1
    return np.clip(np.fft.irfft(np.fft.rfft(pmf, size) ** reps, size), 0.0, None)


def _two_sided_pvalues(pmf: np.ndarray) -> np.ndarray:
    """Exact two-sided p-value 2·min(P(S ≤ s), P(S ≥ s)) for every value s."""
    return np.minimum(1.0, 2 * np.minimum(np.cumsum(pmf), np.cumsum(pmf[::-1])[::-1]))


def _reservoir_pvalues(counts: torch.Tensor, initial_total: int, reps: int) -> dict[str, float]:
    """Per position (8 initial entries, 24 pushed labels): inclusion count ~ Binomial(reps,
    C/(C + N)) exactly; pooled: the initial entries kept, summed over reps, against its exact
    law (reps-fold hypergeometric)."""
    p_in = RES_CAP / (RES_CAP + RES_PUSHED)
    p = {f"pos{i}": _binom_p(int(c), reps, p_in) for i, c in enumerate(counts)}
    p["initial_pooled"] = float(_two_sided_pvalues(
        _sum_pmf(_initial_kept_pmf(RES_CAP, RES_PUSHED), reps))[initial_total])
    return p


def _inclusion_counts(buffer_cls, replacement: str, reps: int, gen) -> tuple[torch.Tensor, int]:
    """Fill with positions 0..C−1, push labels C..C+N−1 in batches of C; count per position
    how often it is in the final buffer, and the initial entries kept in total."""
    counts = torch.zeros(RES_CAP + RES_PUSHED)
    for _ in range(reps):
        buf = buffer_cls(RES_CAP, "noise", replacement=replacement,
                         noise_fn=lambda n, g: torch.arange(n, dtype=torch.float64)[:, None])
        buf.sample(1, gen)
        for s in range(RES_CAP, RES_CAP + RES_PUSHED, RES_CAP):
            buf.push(torch.arange(s, s + RES_CAP, dtype=torch.float64)[:, None], gen)
        kept = buf.storage[:, 0].long()
        assert kept.unique().numel() == RES_CAP  # no entry twice
        counts[kept] += 1
    return counts, int(counts[:RES_CAP].sum())


@pytest.mark.stochastic(alpha=1.1e-6)
def test_reservoir_keeps_a_uniform_sample_of_history(rng):
    """After C = 8 initial entries and N = 24 pushed ones, every one of the 32 positions is in
    the buffer with probability C/(C + N) = 1/4 (reservoir sampling): 32 per-position exact
    binomial tests over R = 3600 independent replicates, plus the pooled count of initial
    entries kept against its exact law; α = 1e-6 over the 33 p-values. Power from the exact law
    of the off-by-one variant (acceptance count c − 1: initial entries 0.226 instead of 0.25):
    the pooled test misses it with probability ≤ 1e-7 (so the test's total false-failure rate is
    ≤ 1.1e-6), and the off-by-one buffer fails the same assertion; so does FIFO (keeps only the
    last C labels, 200 replicates suffice)."""
    m = RES_CAP + RES_PUSHED + 1
    null = _sum_pmf(_initial_kept_pmf(RES_CAP, RES_PUSHED), RES_REPS)
    reject = _two_sided_pvalues(null) < ALPHA / m
    off_by_one = _sum_pmf(_initial_kept_pmf(RES_CAP, RES_PUSHED, count_offset=-1), RES_REPS)
    assert float(off_by_one[~reject].sum()) <= 1e-7
    hypergeom = stats.hypergeom.pmf(np.arange(RES_CAP + 1), RES_CAP + RES_PUSHED, RES_CAP,
                                    RES_CAP)
    np.testing.assert_allclose(_initial_kept_pmf(RES_CAP, RES_PUSHED), hypergeom, atol=1e-12)

    assert_pvalues(_reservoir_pvalues(*_inclusion_counts(ReplayBuffer, "reservoir", RES_REPS,
                                                         rng), RES_REPS), ALPHA)
    with pytest.raises(AssertionError):
        assert_pvalues(_reservoir_pvalues(*_inclusion_counts(_OffByOneReservoir, "reservoir",
                                                             RES_REPS, rng), RES_REPS), ALPHA)
    with pytest.raises(AssertionError):
        assert_pvalues(_reservoir_pvalues(*_inclusion_counts(ReplayBuffer, "fifo", 200, rng),
                                          200), ALPHA)


def test_reproducible_and_state_dict_roundtrip():
    def run(buf, gen):
        out = []
        for _ in range(5):
            x, _ = buf.sample(6, gen)
            buf.push(x + 1.0)
            out.append(x)
        return torch.cat(out)

    make = lambda: ReplayBuffer(16, "noise", noise_fn=UniformNoise((2,)),
                                replacement="reservoir", reinit_prob=0.3)
    a, b = make(), make()
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(run(a, ga), run(b, gb))
    c = make()
    c.load_state_dict(a.state_dict())
    gc = torch.Generator().manual_seed(0)
    gc.set_state(ga.get_state())
    assert torch.equal(run(a, ga), run(c, gc))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(17, "noise", noise_fn=UniformNoise((2,))).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="init"):
        ReplayBuffer(16, "data", replacement="reservoir").load_state_dict(a.state_dict())


def test_peek_draws_stored_states_without_policy():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(10, "noise", reinit_prob=1.0, noise_fn=UniformNoise((2,)))
    buf.sample(2, g)
    buf.storage.fill_(SENTINEL)
    assert (buf.peek(7, g) == SENTINEL).all()


@pytest.mark.parametrize("kwargs,field", [
    ({"capacity": 0}, "capacity"), ({"capacity": 4, "init": "fresh"}, "init"),
    ({"capacity": 4, "reinit_prob": 1.2}, "reinit_prob"),
    ({"capacity": 4, "data_fraction": -0.5}, "data_fraction"),
    ({"capacity": 4, "replacement": "lru"}, "replacement"),
    ({"capacity": 4, "init": "noise"}, "noise_fn"),
    ({"capacity": 4, "n_members": 0}, "n_members"),
])
def test_bad_constructor_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        ReplayBuffer(**kwargs)


def test_bad_calls():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)))
    with pytest.raises(ValueError, match="push"):
        buf.push(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="peek"):
        buf.peek(2, g)
    buf.sample(2, g)
    with pytest.raises(ValueError, match="x"):
        buf.push(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x.shape"):
        buf.push(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="batch"):
        buf.sample(0, g)
    with pytest.raises(ValueError, match="data"):
        ReplayBuffer(4, "data").sample(2, g)
    tcd = ReplayBuffer(4, "true_cd")
    tcd.sample(2, g, data=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="data"):
        tcd.sample(2, g)
    with pytest.raises(ValueError, match="low"):
        UniformNoise((2,), 1.0, 1.0)
    u = UniformNoise((1,), 2.0, 3.0)(1000, g)
    assert u.shape == (1000, 1) and (u >= 2.0).all() and (u < 3.0).all()


def test_every_row_and_slot_can_be_drawn():
    """Data fills, true-CD re-picks and peeks reach every data row and every slot, the first and
    the last included (deterministic seeds; a uniform draw that skipped one of 5 rows 400 times
    or one of 3 slots 300 times would have probability (4/5)^400 < 1e-38 and (2/3)^300 < 1e-52
    under the correct law)."""
    g = torch.Generator().manual_seed(0)
    data = torch.arange(10.0).view(5, 2)  # 5 rows of 2 coordinates: rows, not coordinates
    buf = ReplayBuffer(400, "data")
    buf.sample(2, g, data=data)
    assert sorted({int(v) for v in buf.storage[:, 0]}) == [0, 2, 4, 6, 8]
    true_cd = ReplayBuffer(4, "true_cd", data_fraction=1.0)
    x, _ = true_cd.sample(400, g, data=data)
    assert sorted({int(v) for v in x[:, 0]}) == [0, 2, 4, 6, 8]
    small = ReplayBuffer(3, "noise", noise_fn=UniformNoise((2,)))
    small.sample(3, g)
    small.storage = torch.arange(3.0).view(3, 1).repeat(1, 2)
    assert sorted({int(v) for v in small.peek(300, g)[:, 0]}) == [0, 1, 2]


def test_length_and_empty_state_round_trip():
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    assert len(buf) == 0
    empty = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    empty.load_state_dict(buf.state_dict())  # nothing stored yet: stays empty
    assert empty.storage is None and len(empty) == 0
    buf.sample(6, torch.Generator().manual_seed(0))
    assert len(buf) == 8  # capacity × members
    empty.load_state_dict(buf.state_dict())
    assert torch.equal(empty.storage, buf.storage) and empty.storage is not buf.storage


def test_saved_state_is_checked_against_this_buffer():
    """A state names the buffer it came from; members, capacity and the storage's rows must
    match (a state saved before ensembles existed counts as one member)."""
    one = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)))
    one.sample(2, torch.Generator().manual_seed(0))
    old = {k: v for k, v in one.state_dict().items() if k != "n_members"}
    ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,))).load_state_dict(old)
    two = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    with pytest.raises(ValueError, match=r"^buffer state: n_members is None in the saved state "
                                         r"but 2 in this buffer$"):
        two.load_state_dict(old)
    with pytest.raises(ValueError, match=r"^buffer state: n_members is 1 in the saved state "
                                         r"but 2 in this buffer$"):
        two.load_state_dict(one.state_dict())
    for storage, got in ((torch.zeros(3, 2), r"torch\.Size\(\[3, 2\]\)"),
                         (torch.zeros(4), r"torch\.Size\(\[4\]\)"), ([[0.0]] * 4, "list")):
        with pytest.raises(ValueError, match=r"^buffer state: storage must hold 4 states "
                                             rf"\(N, \.\.\.\), got {got}$"):
            ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,))).load_state_dict(
                {**one.state_dict(), "storage": storage})


def test_peek_refusals_name_what_is_wrong():
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    with pytest.raises(ValueError, match=r"^peek: the buffer is empty; call sample\(\) first$"):
        buf.peek(2)
    buf.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^n: 3 states do not split into n_members=2 equal "
                                         r"blocks$"):
        buf.peek(3)


def test_reservoir_counts_stay_exact_past_float32():
    """The counts c of the next states ever written are exact integers far beyond 2²⁴ (a
    float32 count would round c = 2²⁵ + 1 to 2²⁵ and bias the keep probability)."""
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), replacement="reservoir")
    buf.n_seen = 2**25
    assert buf._reservoir_counts(3).tolist() == [2**25 + 1, 2**25 + 2, 2**25 + 3]


def test_uniform_noise_defaults_to_the_unit_box_and_refuses_bad_bounds():
    """The default box is [0, 1] (images); the draws fill it (max above 0.99 of 4,000 draws:
    a [0, 2] box would put half of them above 1). Bounds must be finite numbers, not bools."""
    x = UniformNoise((2,))(2000, torch.Generator().manual_seed(0))
    assert float(x.min()) >= 0.0 and 0.99 < float(x.max()) < 1.0
    for kwargs, message in (({"low": True}, "low: must be a finite number, got True"),
                            ({"high": math.inf}, "high: must be a finite number, got inf"),
                            ({"low": "0"}, "low: must be a finite number, got '0'"),
                            ({"low": 1.0, "high": 1.0},
                             r"low, high: need low < high, got low=1\.0, high=1\.0")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            UniformNoise((2,), **kwargs)


def test_constructor_boundaries_and_fresh_state():
    """capacity 1 is a buffer; the bounds and the missing noise are named in full; a fresh
    buffer has written nothing and its own generator starts from ``seed`` (default 0)."""
    one = ReplayBuffer(1, "noise", noise_fn=UniformNoise((2,)))
    assert one.sample(1, torch.Generator().manual_seed(0))[0].shape == (1, 2)
    with pytest.raises(ValueError, match=r"^capacity: must be an integer in \[1, ∞\], got 0$"):
        ReplayBuffer(0, "noise", noise_fn=UniformNoise((2,)))
    with pytest.raises(ValueError, match=r"^noise_fn: required when init='noise', got None$"):
        ReplayBuffer(4, "noise")
    fresh = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,))).state_dict()
    assert fresh["ptr"] == 0 and fresh["n_seen"] == 0 and fresh["storage"] is None
    assert torch.equal(fresh["generator"], torch.Generator().manual_seed(0).get_state())


def test_data_fill_uses_the_given_generator_only():
    data = torch.randn(50, 2, generator=torch.Generator().manual_seed(9))
    fills = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        buf = ReplayBuffer(20, "data")
        buf.sample(2, torch.Generator().manual_seed(0), data=data)
        fills.append(buf.storage)
    assert torch.equal(*fills)


def test_re_picks_keep_the_buffers_dtype_and_members_read_their_own_block():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(8, "true_cd", data_fraction=1.0)
    buf.sample(4, g, data=torch.zeros(5, 2))
    x, _ = buf.sample(4, g, data=torch.ones(5, 2, dtype=torch.float64))
    assert x.dtype == torch.float32 and bool((x == 1).all())
    two = ReplayBuffer(6, "noise", noise_fn=UniformNoise((1,)), n_members=2, reinit_prob=0.0)
    two.sample(2, g)
    two.storage = torch.tensor([[0.0]] * 6 + [[1.0]] * 6)  # member 0's block, member 1's block
    x, idx = two.sample(40, g)
    assert bool((x[:20] == 0).all() and (x[20:] == 1).all())
    assert bool((idx[:20] < 6).all() and (idx[20:] >= 6).all())


def test_push_refusals_and_its_smallest_write():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    with pytest.raises(ValueError, match=r"^push: the buffer is empty; call sample\(\) first$"):
        buf.push(torch.zeros(2, 2))
    buf.sample(2, g)
    for x, message in (
            (torch.tensor([[0.0, math.nan]] * 2), (r"x: chain ends to push must be finite "
                                                  r"\(no NaN or inf\)")),
            (torch.zeros(2, 3), r"x: expected shape \(n, \(2,\)\), got \(2, 3\)"),
            (torch.zeros(3, 2), (r"x\.shape\[0\]: 3 states do not split into n_members=2 "
                                r"equal blocks")),
            (torch.zeros(10, 2), (r"x\.shape\[0\] per member: must be an integer in \[1, 4\], "
                                 r"got 5"))):
        with pytest.raises(ValueError, match=f"^{message}$"):
            buf.push(x)
    buf.push(torch.full((2, 2), 7.0))  # one state per member
    assert int((buf.storage == 7.0).all(-1).sum()) == 2


@pytest.mark.parametrize("init,kw", [("noise", {"reinit_prob": 0.0}),
                                     ("true_cd", {"data_fraction": 0.0})])
def test_a_zero_rate_policy_draws_nothing_beyond_the_slots(init, kw):
    """With a zero re-initialisation rate, a read of a filled buffer draws its slot indices and
    nothing else from the generator (no fresh states, no uniforms)."""
    data = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    buf = ReplayBuffer(8, init, noise_fn=UniformNoise((2,)), **kw)
    g = torch.Generator().manual_seed(0)
    buf.sample(4, g, data=data)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(g.get_state())
    want = torch.randint(0, 8, (4,), generator=replay)
    _, idx = buf.sample(4, g, data=data)
    assert torch.equal(idx, want) and torch.equal(g.get_state(), replay.get_state())


def test_sample_refusals_name_the_argument():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)), n_members=2)
    with pytest.raises(ValueError, match=r"^batch: must be an integer in \[1, ∞\], got 0$"):
        buf.sample(0, g)
    with pytest.raises(ValueError, match=r"^batch: 3 states do not split into n_members=2 "
                                         r"equal blocks$"):
        buf.sample(3, g)
    true_cd = ReplayBuffer(4, "true_cd")
    true_cd.sample(2, g, data=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"^data: required by init='true_cd' at every read, "
                                         r"got None$"):
        true_cd.sample(2, g)
    state = {k: v for k, v in ReplayBuffer(1, "true_cd").state_dict().items() if k != "capacity"}
    with pytest.raises(ValueError, match=r"^buffer state: capacity is None in the saved state "
                                         r"but 1 in this buffer$"):
        ReplayBuffer(1, "true_cd").load_state_dict(state)
