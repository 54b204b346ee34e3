"""Dead-code restart: codes left unused are replaced by tokens of the current batch.

One implementation for every free codebook (`vanilla`, `ema`, `fc`). A code is *dead* when no
token of the global batch (every micro-batch and process) chose it for `restart_after`
optimiser steps in a row (vqtorch's `ReplaceLRU`, Huh et al. 2023, counts forward passes
instead), or, for an EMA codebook, when its moving-average count falls below a threshold
(vector-quantize-pytorch's `threshold_ema_dead_code`). Dead codes take random tokens of the
step's last micro-batch, in the quantizer's lookup space, drawn without replacement when there
are enough (as vector-quantize-pytorch's `sample_vectors`; vqtorch's noise is not added).

The check runs in `after_optimizer_step`, once per optimiser step: usage counts are summed
across processes, so every process finds the same dead codes; rank 0 draws the tokens and
broadcasts them, so every process keeps the same codebook. Draws come from a generator seeded
by `restart_seed` and the step count, so a resumed run restarts the same codes with the same
tokens. The optimiser's moments of a restarted code are left as they are (the quantizer cannot
see the optimiser; vector-quantize-pytorch does the same). One host synchronisation per step
(the number of dead codes), only when restart is on.
"""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from vqbench.distributed import all_reduce_sum, broadcast, is_main_process
from vqbench.params import PluginParams


class RestartParams(PluginParams):
    """The restart option of a free codebook (mixed into its parameters)."""

    restart_after: pydantic.NonNegativeInt = pydantic.Field(
        0, description="optimiser steps a code may go unused before it restarts (0: never)"
    )
    restart_seed: pydantic.NonNegativeInt = 0


class DeadCodeRestart(nn.Module):
    """Tracks which codes the global batch uses and picks the tokens that restart dead ones.

    The quantizer calls `record(indices, tokens)` on every training forward and
    `after_step()` once per optimiser step, then writes the returned tokens into its codebook.
    """

    def __init__(self, codebook_size: int, restart_after: int, seed: int = 0) -> None:
        super().__init__()
        self.restart_after, self.seed = restart_after, seed
        self.register_buffer("idle_steps", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("restarted", torch.zeros((), dtype=torch.long))  # codes, in all
        self._counts: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None

    @torch.no_grad()
    def record(self, indices: torch.Tensor, tokens: torch.Tensor) -> None:
        """One micro-batch: the codes its tokens chose and the tokens (lookup space, `(N, d)`)."""
        if self._counts is None:
            self._counts = torch.zeros_like(self.idle_steps)
        self._counts.index_add_(0, indices.reshape(-1), torch.ones_like(indices.reshape(-1)))
        self._tokens = tokens.detach()

    @torch.no_grad()
    def after_step(
        self, also_dead: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """End of an optimiser step: `(dead, tokens)`, a `(K,)` mask and one token per dead
        code, identical on every process, or None when no code restarts (or nothing was
        recorded). `also_dead` adds codes found dead by another rule (an EMA threshold)."""
        if self._counts is None:
            return None
        counts, tokens = self._counts, self._tokens
        self._counts = self._tokens = None
        all_reduce_sum(counts)
        self.steps += 1
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = torch.zeros_like(counts, dtype=torch.bool)
        if self.restart_after > 0:
            dead |= self.idle_steps >= self.restart_after
        if also_dead is not None:
            dead |= also_dead
        count = int(dead.sum())
        if count == 0:
            return None
        self.idle_steps.masked_fill_(dead, 0)
        self.restarted += count
        return dead, self.draw(tokens, count)

    @torch.no_grad()
    def restart_codes(self, embedding: torch.Tensor) -> None:
        """End of an optimiser step for a free codebook: dead rows of `embedding` become
        tokens of the batch (see `after_step`)."""
        found = self.after_step()
        if found is not None:
            dead, tokens = found
            embedding[dead] = tokens.to(embedding.dtype)

    def draw(self, tokens: torch.Tensor, count: int) -> torch.Tensor:
        """`count` of rank 0's tokens (without replacement when it has enough), broadcast."""
        samples = torch.empty(count, tokens.shape[1], dtype=tokens.dtype, device=tokens.device)
        if is_main_process():
            generator = torch.Generator(device=tokens.device)
            generator.manual_seed(self.seed * 1_000_003 + int(self.steps))
            n = tokens.shape[0]
            if n >= count:
                pick = torch.randperm(n, generator=generator, device=tokens.device)[:count]
            else:
                pick = torch.randint(n, (count,), generator=generator, device=tokens.device)
            samples.copy_(tokens[pick])
        broadcast(samples, src=0)
        return samples


def build_restart(params: RestartParams, codebook_size: int, *, always: bool = False):
    """A `DeadCodeRestart` when the parameters turn restart on (or `always`), else None."""
    if params.restart_after == 0 and not always:
        return None
    return DeadCodeRestart(codebook_size, params.restart_after, params.restart_seed)


class UsageReplacement(nn.Module):
    """DiVeQ's code replacement (AaltoML DiVeQ `DIVEQ._replace_unused_entries`).

    Each optimiser step marks the codes the global batch used (a code counts once per step,
    as the reference's `codebook_usage[indices] += 1`, which does not accumulate repeated
    indices). Every `interval` steps, codes whose usage ratio `count / interval` is below
    `threshold` become copies of used codes, drawn with replacement with probability
    proportional to their counts, plus `perturb_eps * N(0, 1)`; then every count is reset.
    The reference counts forward passes of one process and replaces inside the forward; here
    the step is the optimiser step of the global batch and the replacement follows it, so
    every process keeps the same codebook (rank 0 draws, then broadcasts). The host reads
    the step count once (and after a checkpoint is loaded), then synchronises only on the
    steps that replace codes.
    """

    def __init__(
        self, size: int, interval: int, threshold: float, perturb_eps: float, seed: int = 0
    ) -> None:
        super().__init__()
        self.interval, self.threshold, self.perturb_eps, self.seed = (
            interval,
            threshold,
            perturb_eps,
            seed,
        )
        self.register_buffer("usage", torch.zeros(size, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("replaced", torch.zeros((), dtype=torch.long))  # codes, in all
        self._used: torch.Tensor | None = None
        self._host_steps: int | None = None  # `steps` on the host: no sync on most steps
        self.register_load_state_dict_post_hook(UsageReplacement._forget_host_steps)

    @staticmethod
    def _forget_host_steps(module: UsageReplacement, _keys) -> None:
        module._host_steps = None

    @torch.no_grad()
    def record(self, indices: torch.Tensor) -> None:
        """One micro-batch's chosen codes."""
        if self._used is None:
            self._used = torch.zeros_like(self.usage)
        self._used[indices.reshape(-1)] = 1

    @torch.no_grad()
    def replace_codes(self, embedding: torch.Tensor) -> None:
        """End of an optimiser step: count the step's used codes; every `interval` steps,
        replace the rarely used rows of `embedding` and reset the counts."""
        if self._used is None:
            return
        used, self._used = self._used, None
        all_reduce_sum(used)
        self.usage += used.clamp_max(1)
        self.steps += 1
        if self._host_steps is None:
            self._host_steps = int(self.steps)  # one host synchronisation (then on the host)
        else:
            self._host_steps += 1
        if self._host_steps % self.interval:
            return
        keep = self.usage / self.interval >= self.threshold
        count = int((~keep).sum())
        if 0 < count < keep.numel():
            embedding[~keep] = self.draw(embedding, keep, count).to(embedding.dtype)
            self.replaced += count
        self.usage.zero_()

    def draw(self, embedding: torch.Tensor, keep: torch.Tensor, count: int) -> torch.Tensor:
        """`count` copies of used codes sampled by usage, perturbed (rank 0's, broadcast)."""
        samples = torch.empty(count, embedding.shape[1], device=embedding.device)
        if is_main_process():
            generator = torch.Generator(device=embedding.device)
            generator.manual_seed(self.seed * 1_000_003 + int(self.steps))
            kept = keep.nonzero().squeeze(1)
            probs = self.usage[kept].float()
            pick = torch.multinomial(probs, count, replacement=True, generator=generator)
            noise = torch.randn(
                count, embedding.shape[1], generator=generator, device=embedding.device
            )
            samples.copy_(embedding[kept[pick]].float() + self.perturb_eps * noise)
        broadcast(samples, src=0)
        return samples
