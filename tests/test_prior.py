"""The probe's prior against known answers: entropies it must reach, exact normalisation of the
factorised head, cached sampling equal to full recomputation, and the digit arithmetic."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vqbench import VQBenchError
from vqbench.config import ProbeConfig
from vqbench.distributed import World
from vqbench.prior import DigitLayout, TokenPrior, categorical, split_radix
from vqbench.probe import build_prior, train_prior, validation_nll

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def one_thread():
    """Priors this small run fastest on one thread (no OpenMP hand-offs on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(layers=1, width=32, heads=2, batch_size=32, lr=3e-3, warmup_steps=5)


def fit(digits, layout, *, labels=None, classes=0, steps=120, seed=0, **changes):
    """A small prior trained on `digits` (N, L, m); returns it and its settings."""
    probe = ProbeConfig(**{**SMALL, "steps": steps, **changes})
    torch.manual_seed(seed)
    prior = build_prior(layout, digits.shape[1], classes, probe)
    train_prior(prior, digits, labels, probe, CPU, seed)
    return prior, probe


# ---- digits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, limit, expected",
    [
        (1024, 4096, [1024]),
        (2**18, 4096, [512, 512]),
        (2**18, 2, [2] * 18),
        (64000, 8, [8, 8, 8, 5, 5, 5]),
        (64000, 4096, [320, 200]),
        (12, 5, [4, 3]),
    ],
)
def test_split_radix_is_exact_and_within_the_limit(size, limit, expected):
    radices = split_radix(size, limit)
    assert radices == expected
    assert math.prod(radices) == size and max(radices) <= limit
    assert len(radices) == max(1, math.ceil(math.log(size) / math.log(limit) - 1e-9))


def test_sizes_with_a_large_prime_factor_are_refused_in_one_line():
    with pytest.raises(VQBenchError, match=r"prime factor 65,537\); raise probe.softmax_limit"):
        split_radix(65537, 4096)


def test_digits_are_a_bijection_for_composite_indices():
    layout = DigitLayout([12, 35], 7)
    assert layout.radices == [4, 3, 7, 5]
    codes = torch.tensor(list(itertools.product(range(12), range(35))))
    digits = layout.to_digits(codes)
    assert torch.equal(layout.from_digits(digits), codes)
    assert len({tuple(d) for d in digits.tolist()}) == 12 * 35  # every digit tuple once
    for j, r in enumerate(layout.radices):
        assert digits[:, j].min() == 0 and digits[:, j].max() == r - 1


# ---- the head is a distribution over every code ---------------------------------------------
@pytest.mark.parametrize("index_sizes, limit", [([24], 4096), ([24], 3), ([6, 10], 5)])
def test_the_factorised_head_sums_to_one_over_all_codes(index_sizes, limit):
    """By the chain rule, exp(-NLL) of every code at a position sums to 1 (whatever the
    digits), given any prefix: the NLL is exact, not a bound."""
    layout = DigitLayout(index_sizes, limit)
    torch.manual_seed(1)
    prior = TokenPrior(layout, 6, classes=3, width=16, layers=1, heads=2).eval()
    codes = torch.tensor(list(itertools.product(*(range(s) for s in index_sizes))))
    n = len(codes)
    prefix = layout.to_digits(torch.stack([torch.randint(s, (6,)) for s in index_sizes], -1))
    digits = prefix.expand(n, -1, -1).clone()
    digits[:, 3] = layout.to_digits(codes)  # every code at position 3, the same prefix
    with torch.no_grad():
        nll = prior(digits, torch.full((n,), 2))
    total = torch.exp(-nll[:, 3].double()).sum()
    assert total == pytest.approx(1.0, abs=1e-5)
    assert nll[:, :3].std(0).max() < 1e-5  # earlier positions do not see position 3


# ---- entropies it must reach ---------------------------------------------------------------
def one_component(indices: torch.Tensor, k: int):
    layout = DigitLayout([k], 4096)
    return layout, layout.to_digits(indices.unsqueeze(-1))


def test_constant_tokens_cost_almost_nothing():
    layout, digits = one_component(torch.full((256, 16), 5), 64)
    prior, probe = fit(digits[:192], layout, steps=80)
    nll = validation_nll(prior, digits[192:], None, probe, CPU)
    assert nll["bits_per_token"] < 0.05  # of log2(64) = 6 bits without a model


def test_iid_uniform_tokens_cost_log2_k_bits():
    k = 16
    generator = torch.Generator().manual_seed(0)
    layout, digits = one_component(torch.randint(k, (2048, 16), generator=generator), k)
    prior, probe = fit(digits[:1536], layout, steps=80)
    bits = validation_nll(prior, digits[1536:], None, probe, CPU)["bits_per_token"]
    assert bits == pytest.approx(math.log2(k), rel=0.02)


def markov_chain(k: int, n: int, length: int, seed: int):
    """Sequences of a Markov chain started in its stationary law, and the exact entropy per
    token of such a sequence: (H(pi) + (length - 1) * rate) / length."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(k, k, generator=generator, dtype=torch.float64)
    p = torch.softmax(logits, dim=1)
    evals, evecs = torch.linalg.eig(p.t())
    pi = evecs[:, evals.real.argmax()].real
    pi = pi / pi.sum()
    rate = float(-(pi[:, None] * p * p.log()).sum() / math.log(2))
    h0 = float(-(pi * pi.log()).sum() / math.log(2))
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.multinomial(pi.expand(n, k), 1, generator=generator).squeeze(1)
    for t in range(1, length):
        x[:, t] = torch.multinomial(p[x[:, t - 1]], 1, generator=generator).squeeze(1)
    return x, rate, (h0 + (length - 1) * rate) / length


def test_markov_chain_tokens_reach_the_entropy_rate():
    x, rate, per_token = markov_chain(k=6, n=2560, length=16, seed=0)
    assert 0.5 < rate < 2.0  # neither trivial nor uniform (2.6 bits)
    layout, digits = one_component(x, 6)
    prior, probe = fit(digits[:2048], layout, steps=200)
    bits = validation_nll(prior, digits[2048:], None, probe, CPU)["bits_per_token"]
    assert bits == pytest.approx(per_token, rel=0.05)
    with torch.no_grad():  # after the first token (drawn from pi), each costs the rate
        later = prior(digits[2048:].long())[:, 1:].double().mean() / math.log(2)
    assert float(later) == pytest.approx(rate, rel=0.05)


def test_bits_per_image_is_bits_per_token_times_positions():
    layout, digits = one_component(torch.randint(32, (40, 12)), 32)
    probe = ProbeConfig(**SMALL, eval_batch_size=7)
    prior = build_prior(layout, 12, 0, probe).eval()
    nll = validation_nll(prior, digits, None, probe, CPU)
    with torch.no_grad():
        per_image = prior(digits.long()).double().sum(1) / math.log(2)  # bits of each image
    assert nll["bits_per_image"] == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert nll["bits_per_image"] == pytest.approx(nll["bits_per_token"] * 12, rel=1e-9)


# ---- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("index_sizes, limit, classes", [([64], 4096, 0), ([6, 10], 5, 3)])
def test_sampling_with_the_cache_equals_full_recomputation(index_sizes, limit, classes):
    layout = DigitLayout(index_sizes, limit)
    torch.manual_seed(3)
    prior = TokenPrior(layout, 10, classes=classes, width=32, layers=2, heads=4).eval()
    labels = torch.arange(6) % classes if classes else None

    def draw(seed, use_cache):
        generator = torch.Generator().manual_seed(seed)
        return prior.sample(6, classes=labels, generator=generator, use_cache=use_cache)

    cached = draw(0, True)
    assert cached.shape == (6, 10, len(layout.radices))
    assert torch.equal(cached, draw(0, False))
    assert not torch.equal(cached, draw(1, True))  # the seed matters
    indices = layout.from_digits(cached)
    for c, size in enumerate(index_sizes):
        assert 0 <= indices[..., c].min() and indices[..., c].max() < size


def test_categorical_draws_follow_the_probabilities():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0]).log_softmax(0)
    generator = torch.Generator().manual_seed(0)
    draws = categorical(logits.expand(200_000, 4), generator)
    freq = torch.bincount(draws, minlength=4).double() / 200_000
    assert torch.allclose(freq, logits.exp().double(), atol=4e-3)


def test_a_2_18_codebook_is_predicted_as_two_digits_and_sampled_in_range():
    layout = DigitLayout([2**18], 4096)
    assert layout.radices == [512, 512]
    prior = TokenPrior(layout, 4, width=16, layers=1, heads=2).eval()
    codes = torch.randint(2**18, (3, 4, 1))
    nll = prior(layout.to_digits(codes))
    assert torch.isfinite(nll).all() and nll.shape == (3, 4)
    sampled = layout.from_digits(prior.sample(5, generator=torch.Generator().manual_seed(0)))
    assert sampled.max() < 2**18
