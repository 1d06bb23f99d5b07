"""A simulated data set written as data set folders (docs/design.md §5): ``needletrack simulate``'s engine room.
It sits in ``data`` (above ``sim``) because it writes with :class:`needletrack.data.folder.SequenceWriter`.
"""
from __future__ import annotations

from pathlib import Path

from needletrack.data.folder import SequenceWriter
from needletrack.sim import SimConfig, load_backgrounds, preset as get_preset, sequence_seed, simulate_sequence


def write_dataset(out_root, sequences: int, frames: int, size=448, seed: int = 0, backgrounds=None,
                  preset="clinical", progress: bool = True, frame_step=None, prefix: str = "sim",
                  real_fraction: float | None = None) -> list[Path]:
    """Simulate ``sequences`` sequences of ``frames`` frames into ``out_root/<prefix>_<i>/``.

    Each sequence folder gets frames/, masks/, meta.json and needle.json (see docs/internals.md).
    ``backgrounds``: folder or list from :func:`load_backgrounds`, or None; ``real_fraction``: share of
    sequences drawn on a real background (default: the preset's ``real_background_prob``, 1.0).
    Returns the sequence folders.
    """
    cfg = preset if isinstance(preset, SimConfig) else get_preset(preset)
    name = preset if isinstance(preset, str) else "custom"
    if real_fraction is not None:
        cfg = cfg.replace(real_background_prob=float(real_fraction))
    bgs = load_backgrounds(backgrounds) if isinstance(backgrounds, (str, Path)) else backgrounds
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(max(int(sequences) - 1, 0))))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(sequences) * int(frames), unit="frame", desc="simulate", dynamic_ncols=True)
    paths = []
    try:
        for i in range(int(sequences)):
            s = sequence_seed(seed, i)
            it = simulate_sequence(frames, size=size, preset=cfg, seed=s, backgrounds=bgs, frame_step=frame_step)
            meta = dict(it.meta, preset=name, dataset_seed=int(seed), sequence_index=i, seed=s)
            with SequenceWriter(out_root, f"{prefix}_{i:0{width}d}", meta) as w:
                for frame, mask, needle in it:
                    w.add(frame, mask, needle)
                    if bar is not None:
                        bar.update(1)
            paths.append(w.path)
    finally:
        if bar is not None:
            bar.close()
    return paths
