"""Speckle, grey-level and needle statistics of the simulator against real frames and physics (issue 17).

    python benchmarks/sim_stats.py [--sequences 12] [--out docs/results/sim_stats]

Speckle and grey rows, for real frames (the test split of ../shared/data: BUSI, usgra-seg, DL_Track, the
liver sweep's test block) and for each preset's needle-free test frames, all brought to 448 px (longest
side):
- mean/std of grey levels in homogeneous 24x24 patches (quadrant means within 8 % of the patch mean),
- the share of black (<= 5) pixels inside the imaging region (speckle "crackle"),
- speckle grain: lateral and axial FWHM of the fine texture's autocorrelation, lateral as % of image width,
- depth: mean grey of the top tenth of the imaging region's rows over the bottom tenth.
Needle rows (simulator against the physics of the issue): front-wall FWHM of the echo power over the axial
resolution, tip/shaft echo power at 7 degrees, and consecutive-frame correlation with a still probe.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _to448(img):
    h, w = img.shape
    f = 448 / max(h, w)
    return cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def frame_stats(img) -> dict:
    from needletrack.eval.realism import imaging_region
    from needletrack.sim.bmode import grain_fwhm

    img = _to448(np.asarray(img, np.uint8))
    reg = imaging_region(img, margin=6)
    if reg.sum() < 5000:
        return {}
    ys, xs = np.nonzero(reg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ratios = []
    for y in range(y0, y1 - 24, 24):
        for x in range(x0, x1 - 24, 24):
            if not reg[y:y + 24, x:x + 24].all():
                continue
            p = img[y:y + 24, x:x + 24].astype(np.float64)
            m = p.mean()
            if m < 15:
                continue
            q = [p[:12, :12].mean(), p[:12, 12:].mean(), p[12:, :12].mean(), p[12:, 12:].mean()]
            if np.std(q) / m < 0.08:
                ratios.append(m / max(p.std(), 1e-6))
    rows = np.array([img[y][reg[y]].mean() for y in range(y0, y1) if reg[y].sum() > 10])
    n = max(len(rows) // 10, 1)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    hh, hw = (y1 - y0) // 4, (x1 - x0) // 4
    lat, ax = grain_fwhm(img[cy - hh:cy + hh, cx - hw:cx + hw])
    return {"mean_over_std": float(np.median(ratios)) if ratios else None,
            "black_share": float((img[reg] <= 5).mean()),
            "grain_lat_pct_width": 100.0 * lat / (x1 - x0), "grain_ax_px": ax,
            "top_over_bottom": float(rows[:n].mean() / max(rows[-n:].mean(), 1.0))}


def summarize(stats: list[dict]) -> dict:
    out = {}
    for k in ("mean_over_std", "black_share", "grain_lat_pct_width", "grain_ax_px", "top_over_bottom"):
        v = np.array([s[k] for s in stats if s and s.get(k) is not None], float)
        out[k] = [float(np.percentile(v, 25)), float(np.median(v)), float(np.percentile(v, 75))] if v.size else None
    out["n"] = len([s for s in stats if s])
    return out


def needle_stats(kind: str) -> dict:
    from test_sim_physics import _fwhm, _power_columns, _shaft_columns, _sim, _still_correlation, _tip_over_shaft

    widths = []
    for seed in range(1, 6):
        it, frames = _sim(8.0, seed)
        nd = frames[-1][2]
        if not nd["visible"]:
            continue
        pw, xa, ya = _power_columns(it)
        for p in _shaft_columns(it, nd):
            col = int(round(p[0])) - xa
            if 0 <= col < pw.shape[1]:
                v = pw[:, col]
                top = np.nonzero(v > 0.3 * v.max())[0]
                if top.size:
                    seg = v[max(top[0] - 8, 0): top[0] + int(2 * it.psf.axial_res_px) + 4]
                    widths.append(_fwhm(seg) / it.psf.axial_res_px)
    shallow = _tip_over_shaft(7.0, range(1, 9))
    steep = _tip_over_shaft(45.0, range(1, 7))
    corr = [_still_correlation(kind, s) for s in (0, 1, 2)]
    return {"front_wall_fwhm_over_axial_res": float(np.median(widths)),
            "tip_over_shaft_7deg": float(np.median(shallow[:, 0])),
            "tip_over_shaft_45deg_over_data": float(np.median(steep[:, 0] / steep[:, 1])),
            "still_probe_correlation_min": float(min(corr))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from needletrack.data import splits

    t0 = time.time()
    res = {"command": "python benchmarks/sim_stats.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    real = [frame_stats(img) for img, _m, _meta in splits.background_split("test")]
    for block in splits.liver_frames("test"):
        real += [frame_stats(f) for f in block[::4]]
    res["real"] = summarize(real) if real else None
    for kind in ("easy", "clinical", "hard"):
        st = []
        for seq in splits.iter_set(f"test/{kind}", args.sequences, 1, size=448):
            st.append(frame_stats(seq.frames[0]))
        res[kind] = summarize(st)
        res[kind]["needle"] = needle_stats(kind)
        print(kind, res[kind], flush=True)
    print("real", res["real"])
    res["wall_s"] = round(time.time() - t0, 1)
    if args.out:
        from needletrack.utils import write_json_atomic

        write_json_atomic(f"{args.out}.json", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
