"""Every validation and test set of the project, in one place: the measurement harness's yardstick.

Two kinds of set live here.

**Simulated sets** are named ``<split>/<kind>``, for example ``test/clinical`` or ``val/hard``. Each name
fixes a preset, a scene variant and a set seed. Sequence ``i`` of a set is simulated with seed
``sequence_seed(set_seed, i) & 0x7FFFFFFF``, which is below 2**31; training draws its simulator seeds from
``TRAIN_SIM_SEED_BASE`` = 2**31 upwards, so no training clip can ever be a validation or test sequence.
Needle sequences start at the first frame that shows the needle (the prompt frame).

| kind            | preset   | scene                                                                        |
|-----------------|----------|------------------------------------------------------------------------------|
| clinical        | clinical | synthetic tissue                                                             |
| hard            | hard     | synthetic tissue                                                             |
| easy            | easy     | synthetic tissue                                                             |
| clinical+real   | clinical | drawn over the real backgrounds of the same split (``us_backgrounds``)       |
| clinical-ep     | clinical | episodes forced: withdrawal + re-entry and out-of-plane, each with prob. 0.5 |
| hard-ep         | hard     | as above, on the hard preset                                                 |
| negatives       | hard     | needle-free (the needle never enters): hard negatives, distractor lines      |
| still           | clinical | the needle holds still, one frame per source frame: drift over 300 frames     |
| bench           | bench    | a needle in water or gel over a tissue block, as bench and phantom loops look |
| clinical+moving | clinical | drawn over windows of the real liver sweep's blocks of the same split: real    |
|                 |          | freehand probe motion and speckle; the sweep leaves the plane, so does the needle |

**Real shared data** (``../shared/data``, optional development data, never shipped) is split by source
image or sequence in ``splits.json`` beside this module, which is the written record and cannot drift:
``us_backgrounds`` BUSI (breast) images 70/15/15 by image; the usgra-seg (nerve) and DL_Track (muscle)
groups are held out entirely (test only). The liver sweep of ``us_cines`` is split into contiguous
frame blocks with guard gaps. Outside users get the data from the public sources listed in each folder's
SOURCES.md; every function here returns nothing (or skips) where it is absent.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SPLITS_FILE = Path(__file__).with_name("splits.json")
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
SET_SEED_MASK = 0x7FFFFFFF          # set sequence seeds stay below 2**31 (training draws from 2**31 up)


# ----------------------------------------------------------------------------------------------------------
# where the optional development data lives
def shared_data_dir() -> Path | None:
    """``$NEEDLETRACK_SHARED_DATA``, else ``../shared/data`` beside a source checkout; None when absent."""
    env = os.environ.get("NEEDLETRACK_SHARED_DATA")
    cands = [Path(env)] if env else []
    here = Path(__file__).resolve()
    for up in here.parents:
        cands.append(up.parent / "shared" / "data")
        if (up / "pyproject.toml").exists():
            break
    for c in cands:
        if c.is_dir():
            return c
    return None


def backgrounds_dir() -> Path | None:
    d = shared_data_dir()
    return d / "us_backgrounds" if d is not None and (d / "us_backgrounds" / "images").is_dir() else None


def liver_sweep_dir() -> Path | None:
    d = shared_data_dir()
    p = d / "us_cines" / "liver_sweep" if d is not None else None
    return p if p is not None and (p / "frames").is_dir() else None


@lru_cache(maxsize=1)
def split_file() -> dict:
    return json.loads(SPLITS_FILE.read_text())


def _check_split(split: str, allowed=SPLITS) -> str:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r} (choose one of {', '.join(allowed)})")
    return split


# ----------------------------------------------------------------------------------------------------------
# real backgrounds
def background_names(split: str) -> list[str]:
    """Image names (no extension) of ``us_backgrounds`` in ``split``."""
    return list(split_file()["us_backgrounds"][_check_split(split)])


def in_background_split(names, split: str) -> list[bool]:
    """Which of these image names (no extension) belong to ``split`` of the shared ``us_backgrounds`` set.

    A folder that is not the shared set (none of its names is in the split file) is the user's own data: every
    name is kept."""
    names = list(names)
    every = {n for s in SPLITS for n in split_file()["us_backgrounds"][s]}
    if not any(n in every for n in names):
        return [True] * len(names)
    keep = set(background_names(split))
    return [n in keep for n in names]


def filter_backgrounds(backgrounds: list, split: str) -> list:
    """Keep the entries of a :func:`needletrack.sim.load_backgrounds` list that belong to ``split``
    (:func:`in_background_split`: a user's own folder is returned whole)."""
    flags = in_background_split([b[2].get("name") for b in backgrounds], split)
    return [b for b, ok in zip(backgrounds, flags) if ok]


def background_split(split: str, directory=None, max_side: int | None = None) -> list:
    """``(image, mask, meta)`` of the real backgrounds in ``split``; ``[]`` where the data is absent."""
    from needletrack.sim.backgrounds import load_backgrounds

    d = Path(directory) if directory is not None else backgrounds_dir()
    if d is None:
        return []
    return filter_backgrounds(load_backgrounds(d, max_side=max_side), split)


def background_group(meta: dict) -> str:
    """The source group of a background (``BUSI``, ``usgra-seg``, ``DL_Track``)."""
    return str(meta.get("source") or str(meta.get("name", "?")).split("_")[0])


# ----------------------------------------------------------------------------------------------------------
# the real liver sweep (needle-free cine)
def liver_blocks(split: str) -> list[tuple[int, int]]:
    """Half-open frame ranges ``[a, b)`` of the liver sweep in ``split``."""
    return [(int(a), int(b)) for a, b in split_file()["us_cines"]["liver_sweep"][_check_split(split)]]


def liver_frames(split: str, root=None) -> list[list[np.ndarray]]:
    """The liver sweep's frames (uint8) of each block of ``split``; ``[]`` where the data is absent."""
    from needletrack.data.folder import read_sequence

    d = Path(root) if root is not None else liver_sweep_dir()
    if d is None:
        return []
    seq = read_sequence(d)
    return [[seq.frame(i) for i in range(a, min(b, len(seq)))] for a, b in liver_blocks(split)]


# ----------------------------------------------------------------------------------------------------------
# simulated sets
@dataclass(frozen=True)
class SimSet:
    name: str
    split: str
    preset: str
    seed: int
    needle: str = "moving"            # "moving" | "still" | "absent" (see needletrack.sim.simulate_sequence)
    real_backgrounds: bool = False
    moving_backgrounds: bool = False  # over the liver sweep's blocks of the split (real probe motion)
    overrides: dict = field(default_factory=dict)   # SimConfig fields set for this set
    frame_step: int | None = None

    @property
    def kind(self) -> str:
        return self.name.split("/", 1)[1]

    def config(self):
        from needletrack.sim.config import preset

        cfg = preset(self.preset)
        return cfg.replace(**self.overrides) if self.overrides else cfg

    def sequence_seed(self, index: int) -> int:
        from needletrack.sim.dataset import sequence_seed

        return sequence_seed(self.seed, index) & SET_SEED_MASK


_EPISODES = {"withdraw_prob": 0.5, "out_of_plane_prob": 0.5}
_KINDS = {
    # kind: (preset, needle, real backgrounds (True: still pictures, "moving": the liver sweep), overrides,
    # frame_step, seed offset)
    "clinical": ("clinical", "moving", False, {}, None, 1),
    "hard": ("hard", "moving", False, {}, None, 2),
    "easy": ("easy", "moving", False, {}, None, 3),
    "clinical+real": ("clinical", "moving", True, {}, None, 4),
    "clinical-ep": ("clinical", "moving", False, _EPISODES, None, 5),
    "hard-ep": ("hard", "moving", False, _EPISODES, None, 6),
    "negatives": ("hard", "absent", False, {}, None, 7),
    # the needle holds still and stays in the plane: no withdrawal, out-of-plane or probe-move episode
    # (simulator v2's probe moves can withdraw the needle); slow drift, tremor and breathing remain
    "still": ("clinical", "still", False, {"withdraw_prob": 0.0, "out_of_plane_prob": 0.0,
                                           "first_visible_prob": 1.0, "probe_move_prob": 0.0}, 1, 8),
    "bench": ("bench", "moving", False, {}, None, 9),
    "clinical+moving": ("clinical", "moving", "moving", {}, None, 10),
}
_SPLIT_BASE = {"val": 910_000, "test": 730_000}
SIM_SETS: dict[str, SimSet] = {
    f"{sp}/{kind}": SimSet(f"{sp}/{kind}", sp, p, base + off, needle, real is True, real == "moving", dict(ov), step)
    for sp, base in _SPLIT_BASE.items()
    for kind, (p, needle, real, ov, step, off) in _KINDS.items()
}


def sim_set(name: str) -> SimSet:
    if name not in SIM_SETS:
        raise ValueError(f"unknown simulated set {name!r} (known: {', '.join(sorted(SIM_SETS))})")
    return SIM_SETS[name]


def first_visible(masks, min_px: int = 4) -> int | None:
    """Index of the first mask with at least ``min_px`` needle pixels, or None."""
    for i, m in enumerate(masks):
        if int(np.count_nonzero(m)) >= min_px:
            return i
    return None


@dataclass
class SimSequence:
    name: str
    frames: list            # uint8 H×W
    masks: list             # bool H×W
    needle: list            # per-frame dicts (tip, tail, visible, ...)
    meta: dict


def iter_set(name: str, sequences: int, frames: int, size=448, backgrounds=None):
    """Yield the ``sequences`` sequences of ``frames`` frames of simulated set ``name``, deterministically.

    Needle sets start at the first frame that shows the needle: each candidate sequence is simulated with a
    lead of ``frames // 2`` frames and cut there; a candidate whose needle never shows in the lead is passed
    over (the next index is tried, so the set stays a pure function of its name and sizes). ``backgrounds``:
    a list from :func:`background_split` for ``clinical+real`` sets (default: the set's own split)."""
    from needletrack import sim

    s = sim_set(name)
    bgs = None
    if s.real_backgrounds:
        bgs = background_split(s.split) if backgrounds is None else backgrounds
        if not bgs:
            return
    moving = None
    if s.moving_backgrounds:
        moving = liver_frames(s.split)
        if not moving:
            return
    cfg = s.config()
    lead = 0 if s.needle == "absent" else max(frames // 2, 2)
    i = made = 0
    while made < sequences and i < 4 * sequences + 8:
        seed = s.sequence_seed(i)
        it = sim.simulate_sequence(frames + lead, size=size, preset=cfg, seed=seed, backgrounds=bgs,
                                   frame_step=s.frame_step, needle=s.needle, moving_background=moving)
        i += 1
        rendered = list(it)
        f0 = 0 if s.needle == "absent" else first_visible([m for _, m, _ in rendered[:lead + 1]])
        if f0 is None:
            continue
        part = rendered[f0:f0 + frames]
        meta = dict(getattr(it, "meta", {}), set=name, preset=s.preset, set_seed=s.seed, sequence_index=i - 1, seed=seed,
                    first_source_frame=f0)
        yield SimSequence(f"{name.replace('/', '_').replace('+', '_')}_{made:03d}", [p[0] for p in part],
                          [p[1] for p in part], [dict(p[2], frame=k) for k, p in enumerate(part)], meta)
        made += 1


def write_set(name: str, out_root, sequences: int, frames: int, size=448, backgrounds=None) -> list[Path]:
    """Write :func:`iter_set` into data set folders under ``out_root`` (DESIGN §3 layout)."""
    from needletrack.data.folder import SequenceWriter

    out = []
    for seq in iter_set(name, sequences, frames, size=size, backgrounds=backgrounds):
        with SequenceWriter(out_root, seq.name, seq.meta) as w:
            for f, m, n in zip(seq.frames, seq.masks, seq.needle):
                w.add(f, m, n)
        out.append(w.path)
    return out
