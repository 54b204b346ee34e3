"""The quantizer's share of a training step, measured inside the step.

`train.time_quantizer: true` installs a `QuantizerTimer` on the model's quantizer; off (the
default) nothing is installed and nothing is measured. The timer stamps (CUDA events on a
GPU, so nothing waits; `perf_counter` on CPU):

* the forward: from the quantizer's forward pre-hook to its forward hook;
* the backward: from when the gradient of its output `z_q` (and loss) is complete, i.e. the
  decoder's backward is done, to when the gradient of its input is, by two identity autograd
  nodes around it. Autograd runs a node after the nodes created later, so the quantizer's own
  nodes (codebook, projector, losses) run inside that window and the encoder's after it;
* the codebook upkeep after the optimiser step (`after_optimizer_step`, e.g. EMA).

`take()` (at a log step, after the host has synchronised) returns the milliseconds spent in
the quantizer since the last call. Evaluation (no gradient) is not timed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn


class _Stamp(torch.autograd.Function):
    """Identity on tensors; calls `callback` when their gradients have all arrived."""

    @staticmethod
    def forward(ctx, callback, *tensors):
        ctx.callback = callback
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        ctx.callback()
        return (None, *grads)


class QuantizerTimer:
    """Installed on a quantizer (after the model EMA has copied the model); `remove()` undoes
    it."""

    def __init__(self, quantizer: nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.intervals: list[tuple[Any, Any]] = []
        self._forward_start = self._backward_start = None
        self._quantizer = quantizer
        self._upkeep = quantizer.after_optimizer_step
        quantizer.after_optimizer_step = self._timed_upkeep
        self._hooks = [
            quantizer.register_forward_pre_hook(self._before_forward),
            quantizer.register_forward_hook(self._after_forward),
        ]

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _before_forward(self, module, args):
        if not torch.is_grad_enabled():
            return None
        self._forward_start = self._now()
        (z,) = _Stamp.apply(self._end_backward, args[0])
        return (z, *args[1:])

    def _after_forward(self, module, args, out):
        if self._forward_start is None:
            return None
        self.intervals.append((self._forward_start, self._now()))
        self._forward_start = None
        z_q, loss = _Stamp.apply(self._start_backward, out.z_q, out.loss)
        return dataclasses.replace(out, z_q=z_q, loss=loss)

    def _start_backward(self) -> None:
        self._backward_start = self._now()

    def _end_backward(self) -> None:
        if self._backward_start is not None:
            self.intervals.append((self._backward_start, self._now()))
            self._backward_start = None

    def _timed_upkeep(self) -> None:
        start = self._now()
        self._upkeep()
        self.intervals.append((start, self._now()))

    def take(self) -> float:
        """Milliseconds in the quantizer since the last call (the host must have waited for
        the device, as it does at every log step)."""
        total = 0.0
        for start, end in self.intervals:
            total += start.elapsed_time(end) if self.cuda else 1000 * (end - start)
        self.intervals = []
        return total

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        del self._quantizer.after_optimizer_step  # the class's method again
