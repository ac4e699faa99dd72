"""Noisy SGD for many models at once: Poisson sampling, Gaussian noise, the update step.

The one engine that training, shadow models, retraining and unlearning all use. S models of one
architecture (the *members* of a population) advance together: their parameters are stacked
along a leading dimension, and one forward and one backward pass give every member's
per-example gradient norms and its sum of clipped gradients
(:func:`punl.engine.pergrad.clipped_gradient_sums`). One step applies an
:class:`~punl.core.methods.UpdateRule` (formula in :mod:`punl.core.methods`) to every member s:

    batch_t(s) = { frame_s[i] : u_t(s)[i] < q_s and i is not excluded }
    theta_s   <- theta_s - lr * ( (sum_{j in batch} clip_C(g_sj) + sigma C xi_t(s)) / B
                                  + weight_decay * theta_s + l1_penalty * sign(theta_s) )

**Streams.** Each member owns two generators on the parameters' device: one seeded by its
``seed`` draws its uniforms u (one per frame position), one seeded by ``noise_seed(seed)`` its
noise xi (one per parameter, in the order of the parameter names), both in blocks of
``block_length(P, n)`` steps: ``rand(L, n)`` and ``randn(L, P)``. A rule without noise
(sigma = 0) draws none, and its batches are those of a noisy rule with the same seed. A member's
trajectory therefore depends only on its start, frame, exclusions, rate, seed and the rule,
never on which other members share its population (tested).

**Frames.** A member samples from ``frame`` (indices into the data) at rate q = B / |frame|
unless ``rate`` is given. Entries listed in ``excluded`` are drawn but never joined: a coupled
replay of a run without the forget set F uses the original's frame (all N points), rate
(B / N) and seed, with F excluded, so it sees exactly the original's batches minus F and the
original's noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.methods import UpdateRule
from .pergrad import Params, clipped_gradient_sums

#: Uniforms and noise values a member draws per block, at most (sets the block length L).
BLOCK_BUDGET = 1 << 20
#: Steps per block, at most.
MAX_BLOCK = 16

OnStep = Callable[[int, Params, torch.Tensor], None]


def noise_seed(seed: int) -> int:
    """The seed of a member's noise generator, derived from its batch seed (63 bits)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 63)


def block_length(n_params: int, frame_size: int) -> int:
    """L, the steps whose randomness a member draws at once: min(16, 2^20 // (P + n)), >= 1."""
    return max(1, min(MAX_BLOCK, BLOCK_BUDGET // max(1, n_params + frame_size)))


@dataclass(frozen=True)
class Member:
    """One model of a population: its start, the points it samples from, and its seed."""

    start: Params
    seed: int
    frame: np.ndarray
    excluded: np.ndarray | None = None   # indices (values of ``frame``) never joined
    rate: float | None = None            # q; None: B / len(frame)

    def sample_rate(self, rule: UpdateRule) -> float:
        q = self.rate if self.rate is not None else rule.sample_rate(len(self.frame))
        if not 0 < q <= 1:
            raise ValueError(f"batch_size: sampling rate {q} must lie in (0, 1]")
        return q


def stack(params: Sequence[Params]) -> Params:
    """[{name: tensor}] * S -> {name: tensor[S, ...]}."""
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def unstack(stacked: Params) -> list[Params]:
    """{name: tensor[S, ...]} -> [{name: tensor}] * S (views)."""
    n = len(next(iter(stacked.values())))
    return [{k: v[s] for k, v in stacked.items()} for s in range(n)]


class _Streams:
    """The members' random streams, drawn block by block; see the module docstring."""

    def __init__(self, members: Sequence[Member], shapes: dict[str, torch.Size],
                 device: torch.device, dtype: torch.dtype, noisy: bool):
        self.device, self.dtype, self.noisy = device, dtype, noisy
        self.shapes = shapes
        self.n_params = sum(math.prod(s) for s in shapes.values())
        self.sizes = [len(m.frame) for m in members]
        self.batch_gens = [torch.Generator(device=device).manual_seed(int(m.seed))
                           for m in members]
        self.noise_gens = [torch.Generator(device=device).manual_seed(noise_seed(m.seed))
                           for m in members]
        self.lengths = [block_length(self.n_params, n) for n in self.sizes]
        self.width = max(self.sizes)
        shared = len(set(self.lengths)) == 1
        self.draw = self._draw_shared if shared else self._draw_each
        self._blocks: list = [None] * len(members)

    @property
    def generators(self) -> list[torch.Generator]:
        return self.batch_gens + self.noise_gens

    def _block(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member s's next block: uniforms [L, n] and noise [L, P] (zeros without noise)."""
        L = self.lengths[s]
        u = torch.rand(L, self.sizes[s], generator=self.batch_gens[s], device=self.device)
        if not self.noisy:
            return u, torch.zeros(L, self.n_params, device=self.device, dtype=self.dtype)
        return u, torch.randn(L, self.n_params, generator=self.noise_gens[s], device=self.device,
                              dtype=self.dtype)

    def _padded(self, blocks) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks of every member stacked as [L, S, n_max] (padding 1.0) and [L, S, P]."""
        L = len(blocks[0][0])
        u = torch.ones(L, len(blocks), self.width, device=self.device)
        for s, (block, _) in enumerate(blocks):
            u[:, s, : block.shape[1]] = block
        return u, torch.stack([xi for _, xi in blocks], dim=1)

    def _draw_shared(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member has the same block length: stack each block once, index it per step."""
        L = self.lengths[0]
        if t % L == 0:
            self._u, self._xi = self._padded([self._block(s) for s in range(len(self.sizes))])
        return self._u[t % L], self._xi[t % L]

    def _draw_each(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Members with different block lengths: refill each when its block ends."""
        u = torch.ones(len(self.sizes), self.width, device=self.device)
        xi = torch.empty(len(self.sizes), self.n_params, device=self.device, dtype=self.dtype)
        for s, L in enumerate(self.lengths):
            if t % L == 0:
                self._blocks[s] = self._block(s)
            u[s, : self.sizes[s]] = self._blocks[s][0][t % L]
            xi[s] = self._blocks[s][1][t % L]
        return u, xi

    def split(self, xi: torch.Tensor) -> Params:
        """Flat noise [S, P] as {name: [S, *shape]} views, in the order of the names."""
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            out[name] = xi[:, offset:offset + size].view(len(xi), *shape)
            offset += size
        return out


@dataclass(frozen=True)
class _Frames:
    """Every member's frame as rows of one padded index tensor, with what may join a batch."""

    index: torch.Tensor      # [S, n_max] indices into the data (0 at padding)
    joinable: torch.Tensor   # [S, n_max] False at padding and at excluded entries
    rate: torch.Tensor       # [S]

    @classmethod
    def of(cls, members: Sequence[Member], rule: UpdateRule, device) -> "_Frames":
        width = max(len(m.frame) for m in members)
        index = torch.zeros(len(members), width, dtype=torch.long)
        joinable = torch.zeros(len(members), width, dtype=torch.bool)
        for s, m in enumerate(members):
            frame = torch.as_tensor(np.asarray(m.frame, dtype=np.int64))
            index[s, : len(frame)] = frame
            keep = torch.ones(len(frame), dtype=torch.bool)
            if m.excluded is not None and len(m.excluded):
                keep = ~torch.isin(frame, torch.as_tensor(np.asarray(m.excluded, dtype=np.int64)))
            joinable[s, : len(frame)] = keep
        rate = torch.tensor([m.sample_rate(rule) for m in members], dtype=torch.float64)
        return cls(index.to(device), joinable.to(device), rate.to(device))

    def capacity(self) -> int:
        """A batch size no member exceeds but with probability < 1e-12 per step: the largest
        expected batch plus 8 standard deviations plus 8."""
        expected = (self.rate * self.joinable.sum(1)).max().item()
        return int(math.ceil(expected + 8 * math.sqrt(expected) + 8))

    def batches(self, u: torch.Tensor, capacity: int | None):
        """Padded batches [S, K] (indices), their weights [S, K] (1 member, 0 padding) and the
        realised batch sizes [S]. K = the largest batch (``capacity`` None, which reads the
        sizes on the host) or ``capacity``."""
        joined = (u < self.rate[:, None].to(u.dtype)) & self.joinable
        sizes = joined.sum(1)
        width = int(sizes.max()) if capacity is None else capacity
        position = torch.where(joined, joined.cumsum(1) - 1, width)
        position = position.clamp(max=width)
        out = torch.zeros(len(u), width + 1, dtype=torch.long, device=u.device)
        out.scatter_(1, position, self.index)
        weights = torch.arange(width, device=u.device)[None, :] < sizes[:, None]
        return out[:, :width], weights, sizes


def noisy_sgd_step(model: nn.Module, params: Params, xb: torch.Tensor, yb: torch.Tensor,
                   weights: torch.Tensor, noise: Params, rule: UpdateRule) -> Params:
    """One update of every member (formula in the module docstring), given its padded batch
    (xb [S, K, ...], yb [S, K], weights [S, K]) and its noise draw ({name: [S, *shape]})."""
    clip = rule.clip if rule.clip_per_example else None
    summed = clipped_gradient_sums(model, params, xb, yb, weights.to(xb.dtype), clip).summed
    new = {}
    for k, p in params.items():
        g = (summed[k] + (rule.sigma * rule.clip) * noise[k]) / rule.expected_batch
        if rule.weight_decay:
            g = g + rule.weight_decay * p
        if rule.l1_penalty:
            g = g + rule.l1_penalty * torch.sign(p)
        new[k] = p - rule.lr * g
    return new


class Population:
    """S members advancing together; a snapshot taken between blocks resumes bit for bit.

    ``params`` holds the stacked parameters after ``t`` steps. :meth:`advance` runs more steps;
    :meth:`state` / :meth:`restore` save and restore the step, the parameters and every member's
    generator, which is enough exactly when every member is at the start of a block
    (:meth:`at_block_start`)."""

    def __init__(self, model: nn.Module, members: Sequence[Member], x: torch.Tensor,
                 y: torch.Tensor, rule: UpdateRule):
        if not members:
            raise ValueError("members: a population needs at least one member")
        self.model, self.x, self.y, self.rule = model, x, y, rule
        self.params = {k: v.to(x.device) for k, v in stack([m.start for m in members]).items()}
        shapes = {k: v.shape[1:] for k, v in self.params.items()}
        self.streams = _Streams(members, shapes, x.device, next(iter(self.params.values())).dtype,
                                noisy=rule.sigma > 0)
        self.frames = _Frames.of(members, rule, x.device)
        # Off the CPU, batches are padded to a fixed capacity so that no step reads a size on
        # the host; a batch above it (probability < 1e-12 per step) is an error, checked at the
        # end of each advance.
        self.capacity = None if x.device.type == "cpu" else self.frames.capacity()
        self.t = 0

    def advance(self, steps: int, on_step: OnStep | None = None) -> None:
        """``steps`` more steps; ``on_step(t, params, batch_sizes)`` before each."""
        overflow = torch.zeros((), dtype=torch.bool, device=self.x.device)
        for _ in range(steps):
            u, xi = self.streams.draw(self.t)
            idx, weights, sizes = self.frames.batches(u, self.capacity)
            if self.capacity is not None:
                overflow |= (sizes > self.capacity).any()
            if on_step is not None:
                on_step(self.t, self.params, sizes)
            self.params = noisy_sgd_step(self.model, self.params, self.x[idx], self.y[idx],
                                         weights, self.streams.split(xi), self.rule)
            self.t += 1
        if bool(overflow):
            raise RuntimeError(f"a Poisson batch exceeded the capacity {self.capacity}")

    def member(self, s: int) -> Params:
        return {k: v[s] for k, v in self.params.items()}

    def at_block_start(self) -> bool:
        return all(self.t % L == 0 for L in self.streams.lengths)

    def state(self) -> dict:
        """Step, parameters (on the CPU) and generator states; only between blocks."""
        if not self.at_block_start():
            raise RuntimeError(f"population: step {self.t} is inside a block; no snapshot")
        return {"t": self.t, "params": {k: v.cpu() for k, v in self.params.items()},
                "generators": [g.get_state() for g in self.streams.generators]}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` of a population with the same members."""
        if len(state["generators"]) != len(self.streams.generators):
            raise ValueError("state: taken from a population of another size")
        self.t = int(state["t"])
        self.params = {k: v.to(self.x.device) for k, v in state["params"].items()}
        for g, s in zip(self.streams.generators, state["generators"]):
            g.set_state(s)


def run_members(model: nn.Module, members: Sequence[Member], x: torch.Tensor, y: torch.Tensor,
                rule: UpdateRule, checkpoints: Sequence[int]) -> list[list[Params]]:
    """Advance every member to each checkpoint in turn, together.

    Returns ``out[s][c]``: member s's parameters after ``checkpoints[c]`` steps (0 gives its
    start)."""
    checkpoints = [int(k) for k in checkpoints]
    if any(b < a for a, b in zip(checkpoints, checkpoints[1:])) or min(checkpoints) < 0:
        raise ValueError(f"checkpoints: must be non-decreasing and >= 0, got {checkpoints}")
    if not members:
        return []
    population, saved = Population(model, members, x, y, rule), []
    for k in checkpoints:
        population.advance(k - population.t)
        saved.append(population.params)
    return [[{k: v[s] for k, v in p.items()} for p in saved] for s in range(len(members))]


def run_steps(model: nn.Module, members: Sequence[Member], x: torch.Tensor, y: torch.Tensor,
              rule: UpdateRule, steps: int) -> list[Params]:
    """Every member's parameters after ``steps`` steps."""
    return [traj[-1] for traj in run_members(model, members, x, y, rule, [steps])]
