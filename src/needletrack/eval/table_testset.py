"""The test set of the paper's tables (``needletrack tables``): the harness's frozen simulated test sets,
written once to ``DIR/data/test``, read back, and the hard frames of the Figure-7 panel."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from needletrack.train.table_rows import repo_path
from needletrack.utils import write_json_atomic


def ensure_test_set(out_dir: Path, scale_cfg: dict, log: Callable[[str], None]) -> Path:
    """Simulate the test set into ``out_dir/data/test`` once (reused while its spec matches): the harness's
    named sets ``test/<preset>`` (needletrack.data.splits); ``test.seed`` and ``test.frame_step`` of older
    table configs are no longer used."""
    import shutil

    t = scale_cfg["test"]
    spec = {"harness_sets": 1, "sequences": t["sequences"], "frames": t["frames"], "size": scale_cfg["input_size"],
            "presets": list(t.get("presets") or ["clinical"]), "frame_step": int(t["frame_step"]) if t.get("frame_step") else None,
            "backgrounds": bool(t.get("backgrounds")) and Path(repo_path(t["backgrounds"])).is_dir()}
    root = out_dir / "data" / "test"
    stamp = root / "spec.json"
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()) == spec:
                return root
        except ValueError:
            pass
    if root.exists():
        shutil.rmtree(root)
    from needletrack.data import splits
    from needletrack.data.folder import SequenceWriter

    # the harness's frozen test sets (needletrack.data.splits): test/<preset> for each preset, plus
    # test/clinical+real over the test split of the real backgrounds where they are present
    names = [f"test/{p}" for p in spec["presets"]]
    if spec["backgrounds"]:
        names.append("test/clinical+real")
    log(f"simulating the test set: {spec['sequences']} sequences × {spec['frames']} frames at "
        f"{spec['size']} px ({', '.join(names)})")
    tmp = out_dir / "data" / ".test.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    n = spec["sequences"]
    per = [n // len(names) + (1 if k < n % len(names) else 0) for k in range(len(names))]
    bgs = splits.background_split("test", repo_path(t["backgrounds"])) if spec["backgrounds"] else None
    for name, count in zip(names, per):
        for seq in (splits.iter_set(name, count, spec["frames"], size=spec["size"], backgrounds=bgs) if count else ()):
            with SequenceWriter(tmp, seq.name, seq.meta) as w:
                for frame, mask, needle in zip(seq.frames, seq.masks, seq.needle):
                    w.add(np.asarray(frame, np.uint8), np.asarray(mask, bool), _jsonable(needle))
    write_json_atomic(tmp / "spec.json", spec)
    os.replace(tmp, root)
    return root


def _jsonable(d):
    if d is None:
        return None
    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def load_test_set(root: Path) -> list[dict]:
    """Every test sequence in memory: frames, masks, meta, needle records."""
    from needletrack.data.folder import list_sequences, read_sequence

    seqs = []
    for sp in list_sequences(root):
        s = read_sequence(sp)
        seqs.append({"name": s.name, "frames": [s.frame(i) for i in range(len(s))],
                     "masks": [s.mask(i) for i in range(len(s))], "meta": s.meta or {}, "needle": s.needle})
    return seqs


def pick_hard_frames(seqs: list[dict], n: int) -> list[tuple[int, int]]:
    """``n`` (sequence index, frame index) pairs of hard frames: scored frames with a visible needle and the
    lowest visible fraction (from needle.json; else the smallest mask), at most one per sequence first."""
    cands = []
    for si, s in enumerate(seqs):
        for fi in range(1, len(s["frames"])):
            area = int(s["masks"][fi].sum())
            if area == 0:
                continue
            vis = None
            if s["needle"] and fi < len(s["needle"]):
                vis = s["needle"][fi].get("visible_fraction")
            cands.append(((vis if vis is not None else 1.0), area, si, fi))
    cands.sort()
    chosen, used = [], set()
    for _v, _a, si, fi in cands:           # one per sequence first
        if si not in used:
            chosen.append((si, fi))
            used.add(si)
        if len(chosen) == n:
            return chosen
    for _v, _a, si, fi in cands:
        if (si, fi) not in chosen:
            chosen.append((si, fi))
        if len(chosen) == n:
            break
    return chosen

