"""The data side of a training run: the configured clip sources, the ``ClipDataset`` (clips cut, then
augmented) and the DataLoader whose batch of step k is a pure function of (seed, k, rank)."""
from __future__ import annotations

import os

import torch

from needletrack.data.clips import ClipDataset, StepBatchSampler, build_source, worker_init
from needletrack.errors import InputError, NeedletrackError
from needletrack.train.config import TrainConfig


def auto_workers(local_world: int = 1) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores // max(1, local_world) - 1, 12))


def resolve_sources(cfg: TrainConfig, log) -> list:
    """Every configured source that is usable (optional folders that are absent are skipped, with a note)."""
    out = []
    for spec in cfg.data.sources:
        try:
            s, note = build_source(spec, default_gap=tuple(cfg.clip.gap))
        except ModuleNotFoundError as e:
            raise NeedletrackError(f"clip source {spec.get('kind')!r} needs {e.name}, which is not installed") from None
        except ValueError as e:
            raise InputError(f"invalid data source {spec!r}: {e}") from None
        if note:
            log(note)
        if s is not None:
            out.append(s)
    if not out:
        raise InputError("no usable data source (every configured source was absent)")
    return out


def build_loader(cfg: TrainConfig, size: int, dist, dev: torch.device, start: int, end: int,
                 log) -> tuple[torch.utils.data.DataLoader, int]:
    """The DataLoader of steps ``start`` .. ``end`` on this rank, and its number of workers."""
    sources = resolve_sources(cfg, log)
    bsz = cfg.batch_size
    dataset = ClipDataset(sources, size, n_frames=cfg.clip.frames, seed=cfg.seed, augment=cfg.augment,
                          reverse_prob=cfg.clip.reverse_prob, samples_per_step=bsz * dist.world_size,
                          as_uint8=True)
    nw = cfg.data.num_workers
    nw = auto_workers(dist.local_world_size) if nw is None else nw
    sampler = StepBatchSampler(bsz, start, end, dist.rank, dist.world_size)
    loader_kw = dict(batch_sampler=sampler, num_workers=nw, pin_memory=dev.type == "cuda",
                     generator=torch.Generator().manual_seed(cfg.seed))
    if nw > 0:
        # spawned, not forked: forked workers hung a 12-worker run on the H100 machine (most likely OpenCV's
        # thread pool, which the main process has used to build the validation split, is not fork-safe)
        loader_kw.update(worker_init_fn=worker_init, prefetch_factor=cfg.data.prefetch_factor,
                         persistent_workers=False, multiprocessing_context=cfg.data.start_method)
    return torch.utils.data.DataLoader(dataset, **loader_kw), nw
