"""Validation during training: a fixed split (simulated once, or a data set folder), scored by TRACKING
each sequence from its first mask with the shipped :class:`~needletrack.track.Tracker` (its streaming memory,
``memory_slots`` and ``mem_every``, and its segment policy: the ``val.tracker`` options), with the metrics of
docs/design.md §5 (``needletrack.eval.metrics``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from needletrack.errors import InputError
from needletrack.train.config import ValConfig


@dataclass
class ValSequence:
    name: str
    group: str            # simulator preset, or "folder"
    frames: np.ndarray    # T×H×W uint8
    masks: np.ndarray     # T×H×W bool


def _resize_seq(frames, masks, size):
    h, w = size
    if frames.shape[1:] == (h, w):
        return frames, masks
    f = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in frames])
    m = np.stack([cv2.resize(x.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5 for x in masks])
    return f, m


def build_val_set(vcfg: ValConfig, size: tuple[int, int], out_dir: Path | None = None,
                  log=print) -> list[ValSequence]:
    """The validation split: ``vcfg.root`` (data set folder) or the harness's simulated validation sets
    (``val/<preset>`` for each of ``vcfg.presets``, plus ``val/clinical+real`` where backgrounds are
    given), each starting at the first visible needle. Deterministic; optionally written to ``out_dir``.
    ``vcfg.seed`` and ``vcfg.frame_step`` are no longer used: the set names fix seeds and steps."""
    seqs: list[ValSequence] = []
    if vcfg.root:
        from needletrack.data.folder import list_sequences, read_sequence

        for p in list_sequences(vcfg.root):
            s = read_sequence(p)
            if s.mask_paths is None or len(s.mask_paths) != len(s):
                raise InputError("validation sequence needs one mask per frame", p)
            f = np.stack([s.frame(i) for i in range(len(s))])
            m = np.stack([s.mask(i) for i in range(len(s))])
            f, m = _resize_seq(f, m, size)
            seqs.append(ValSequence(s.name, "folder", f, m))
        return seqs
    from needletrack.data import splits

    # the harness's named validation sets (needletrack.data.splits): one per preset, plus the clinical set
    # over the val split of the real backgrounds when they are present; sequences dealt round-robin
    names = [f"val/{p}" for p in vcfg.presets]
    bg_dir = vcfg.backgrounds
    bgs = splits.background_split("val", bg_dir) if bg_dir and Path(bg_dir).is_dir() else []
    if bgs:
        names.append("val/clinical+real")
    n, t = vcfg.sequences, vcfg.frames
    per = [n // len(names) + (1 if k < n % len(names) else 0) for k in range(len(names))]
    sz = size[0] if size[0] == size[1] else tuple(size)
    for name, count in zip(names, per):
        if count == 0:
            continue
        group = splits.sim_set(name).kind
        for seq in splits.iter_set(name, count, t, size=sz, backgrounds=bgs if name.endswith("+real") else None):
            f, m = _resize_seq(np.stack(seq.frames), np.stack(seq.masks).astype(bool), size)
            seqs.append(ValSequence(seq.name, group, f, m))
            if out_dir is not None:
                from needletrack.data.folder import SequenceWriter

                with SequenceWriter(out_dir, seq.name, seq.meta) as w:
                    for k in range(len(f)):
                        w.add(f[k], m[k], seq.needle[k] if f.shape[1:] == seq.frames[0].shape else None)
    return seqs


def evaluate_model(model, val_set: list[ValSequence], vcfg: ValConfig, device, autocast_dtype=None,
                   threshold: float = 0.5) -> dict:
    """Track every validation sequence from its first mask with the shipped streaming policy (the
    :class:`~needletrack.track.Tracker`, the one loop that the CLI, the services and the benchmarks use), so
    that ``best.safetensors`` is picked by the tracker we ship; returns ``{"overall": metrics, "<group>":
    metrics, ...}`` (pooled over scored frames). ``vcfg.tracker`` may set Tracker options (e.g. policy,
    min_score, memory_slots); ``autocast_dtype`` is not used by the tracker (kept for the caller's signature)."""
    from needletrack.scoring import MetricAccumulator
    from needletrack.track import Tracker

    opts = dict(vcfg.tracker or {})
    opts.setdefault("threshold", threshold)
    was_training = model.training
    model.eval()
    overall = MetricAccumulator()
    groups: dict[str, MetricAccumulator] = {}
    try:
        for s in val_set:
            h, w = s.frames.shape[1:]
            tracker = Tracker(model, device=str(device), input_size=(h, w), **opts)
            acc = MetricAccumulator()
            for i in range(len(s.frames)):
                r = tracker.step(s.frames[i], mask=s.masks[0]) if i == 0 else tracker.step(s.frames[i])
                acc.update(r.mask, s.masks[i], first=(i == 0))
            overall.merge(acc)
            groups.setdefault(s.group, MetricAccumulator()).merge(acc)
    finally:
        model.train(was_training)
    out = {"overall": overall.result()}
    if len(groups) > 1:
        for g, a in groups.items():
            out[g] = a.result()
    return out
