"""Exact, cheap resume for the video training pipeline: a sampler with per-epoch, per-sample seeds and a hook
that skips the samples an interrupted epoch already used.

Why not mmengine's ``DefaultSampler``: a checkpoint taken inside an epoch resumes, with the epoch-based loop, at
the START of that epoch (the finished part is trained on twice), and the augmentation draws come from the worker
processes' global RNG, which no checkpoint holds. Here

- :class:`ResumableSampler` yields ``(index, seed)`` pairs: the order of epoch ``e`` is a permutation drawn from
  ``seed + e`` (as ``DefaultSampler``), sharded over ranks, and every sample's augmentation seed is a function of
  (seed, epoch, position in the epoch). A clip therefore gets the same frames, crop and flip whatever the number
  of workers, and whether or not the run was interrupted.
- :class:`ResumeSamplerHook` reads (epoch, iteration) after a resume and tells the sampler to leave out the
  ``iteration - epoch * iterations_per_epoch`` batches already trained on, without decoding them.

Model-side randomness (dropout, stochastic depth) is restored by ``rs_transfer.runner.hooks.RngStateHook``; the hook keeps
the DataLoader from drawing on that RNG (see :class:`ResumeSamplerHook`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.hooks import Hook
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed per (run seed, epoch, global position): splitmix64-style mixing, so neighbours differ."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & (2 ** 64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2 ** 64 - 1)
    x ^= x >> 29
    return x & (2 ** 63 - 1)


class ResumableSampler(Sampler):
    """``DefaultSampler`` semantics (shuffle by ``seed + epoch``, round up so every rank gets as many samples),
    yielding ``(index, sample_seed)``; :meth:`skip` drops the first samples of the next pass once."""

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None, round_up: bool = True) -> None:
        rank, world_size = get_dist_info()
        self.rank, self.world_size = rank, world_size
        self.dataset, self.shuffle, self.round_up = dataset, shuffle, round_up
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch, self._skip = 0, 0
        n = len(dataset)
        self.num_samples = math.ceil(n / world_size) if round_up else math.ceil((n - rank) / world_size)
        self.total_size = self.num_samples * world_size if round_up else n

    def order(self) -> list[int]:
        """This epoch's global order (before sharding)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if self.round_up:
            indices = (indices * int(self.total_size / n + 1))[:self.total_size]
        return indices

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        positions = range(self.rank, self.total_size, self.world_size)
        pairs = [(order[p], sample_seed(self.seed, self.epoch, p)) for p in positions]
        skip, self._skip = self._skip, 0
        return iter(pairs[skip:])

    def __len__(self) -> int:
        return self.num_samples - self._skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n: int) -> None:
        """Leave out the first ``n`` samples (of this rank) of the next pass only."""
        self._skip = max(0, min(int(n), self.num_samples))


class ResumeSamplerHook(Hook):
    """After a resume inside an epoch, skip that epoch's finished batches (see module doc). Runs after
    ``DistSamplerSeedHook`` (which sets the epoch).

    It also gives the training DataLoader a generator of its own: otherwise every epoch's iterator draws its base
    seed from torch's global RNG, the one dropout and stochastic depth use and ``RngStateHook`` restores, and a run
    resumed at an epoch boundary would train the next epoch one draw off the uninterrupted run.
    """

    priority = "LOW"

    def before_train(self, runner: Any) -> None:
        loader = runner.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, ResumableSampler) and getattr(loader, "generator", None) is None:
            loader.generator = torch.Generator().manual_seed(sampler.seed)

    def before_train_epoch(self, runner: Any) -> None:
        loader = runner.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, ResumableSampler):
            return
        per_epoch = math.ceil(sampler.num_samples / loader.batch_size) if not loader.drop_last \
            else sampler.num_samples // loader.batch_size
        # A checkpoint taken at the last iteration of epoch e records epoch e (mmengine increments it after the
        # epoch's hooks), so done == per_epoch: the whole epoch is skipped instead of trained twice.
        done = min(runner.iter - runner.epoch * per_epoch, per_epoch)
        if done > 0:
            sampler.skip(done * loader.batch_size)
            from mmengine.logging import print_log

            print_log(f"resumed inside epoch {runner.epoch + 1}: skipping its first {done} of {per_epoch} batches "
                      "(already trained on)", logger="current")
