"""Speckle, grey-level and needle statistics of the simulator against real frames and physics (issue 17).

    python benchmarks/sim_stats.py [--sequences 24] [--real-split train] [--out docs/results/sim_stats]

Speckle and grey rows, for real frames (by default the train split of ../shared/data, the split the simulator is
calibrated on: BUSI train images and every 4th frame of the liver sweep's train blocks) and for each preset's
needle-free frames (frame 3 of sequences seeded 7000 + i, so persistence is in its steady state), all brought to
448 px (longest side):
- mean/std of grey levels in homogeneous 24x24 patches (quadrant means within 8 % of the patch mean), and their
  fine texture (mean |Laplacian| over std: pixel-scale roughness),
- the median grey inside the imaging region,
- the share of black (<= 5) pixels inside the imaging region (speckle "crackle"),
- speckle grain: lateral and axial FWHM of the fine texture's autocorrelation, lateral as % of image width,
- depth: mean grey of the top tenth of the imaging region's rows over the bottom tenth.
Needle rows per preset (simulator against the physics of the issue), on the needle's echo power before log
compression with the insertion angle fixed: front-wall FWHM over the axial resolution (8 deg), tip/shaft echo
power over the last 0.5 mm at 7 deg and, at 45 deg, over the ratio the needle_visibility CNR curves predict,
successive reverberation peaks (6 deg, three repeats); the displayed front-wall line's width (FWHM in px of the
448-px grey frame, 8 deg, against the 3-4 px measured on real needle frames in issue 17; also over the train
split's real backgrounds, 12 sequences); and the smallest
consecutive-frame correlation with a still probe (3 sequences). Writes OUT.json and OUT.md (the tables of docs/simulator.md).
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
    from needletrack.sim.scanner import grain_fwhm

    img = _to448(np.asarray(img, np.uint8))
    reg = imaging_region(img, margin=6)
    if reg.sum() < 5000:
        return {}
    ys, xs = np.nonzero(reg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ratios, rough = [], []
    f = img.astype(np.float32)
    lap = np.abs(cv2.Laplacian(f, cv2.CV_32F, ksize=1))
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
                rough.append(float(lap[y + 1:y + 23, x + 1:x + 23].mean()) / max(p.std(), 1e-6))
    rows = np.array([img[y][reg[y]].mean() for y in range(y0, y1) if reg[y].sum() > 10])
    n = max(len(rows) // 10, 1)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    hh, hw = (y1 - y0) // 4, (x1 - x0) // 4
    lat, ax = grain_fwhm(img[cy - hh:cy + hh, cx - hw:cx + hw])
    return {"mean_over_std": float(np.median(ratios)) if ratios else None,
            "lap_over_std": float(np.median(rough)) if rough else None,
            "median_grey": float(np.median(img[reg])),
            "black_share": float((img[reg] <= 5).mean()),
            "grain_lat_pct_width": 100.0 * lat / (x1 - x0), "grain_ax_px": ax,
            "top_over_bottom": float(rows[:n].mean() / max(rows[-n:].mean(), 1.0))}


def summarize(stats: list[dict]) -> dict:
    out = {}
    for k in ("mean_over_std", "lap_over_std", "median_grey", "black_share", "grain_lat_pct_width", "grain_ax_px",
              "top_over_bottom"):
        v = np.array([s[k] for s in stats if s and s.get(k) is not None], float)
        out[k] = [float(np.percentile(v, 25)), float(np.median(v)), float(np.percentile(v, 75))] if v.size else None
    out["n"] = len([s for s in stats if s])
    return out


KINDS = ("easy", "clinical", "hard", "bench")
ROWS = (("mean_over_std", "grey mean/std, homogeneous 24x24 patches", "{:.1f}"),
        ("lap_over_std", "fine texture: mean abs Laplacian / std, same patches", "{:.2f}"),
        ("median_grey", "median grey inside the image", "{:.0f}"),
        ("black_share", "black (<= 5) share inside the image", "{:.3f}"),
        ("grain_lat_pct_width", "grain: lateral FWHM, % of image width", "{:.1f}"),
        ("grain_ax_px", "grain: axial FWHM, px", "{:.1f}"),
        ("top_over_bottom", "top tenth / bottom tenth grey", "{:.1f}"))


def _sim(kind, angle, seed, backgrounds=None, **kw):
    from needletrack.sim import preset, simulate_sequence

    cfg = preset(kind).replace(angle_deg=(angle, angle), border_prob=0.0, overlay_prob=0.0, convex_prob=0.0,
                               first_visible_prob=1.0, bend_prob=0.0, tilt_deg=(0.0, 0.0), dropout=(0.0, 0.0),
                               out_of_plane_prob=0.0, withdraw_prob=0.0, probe_move_prob=0.0, **kw)
    it = simulate_sequence(2, size=448, preset=cfg, seed=seed, needle="still", backgrounds=backgrounds)
    return it, list(it)


def _columns(it, nd):
    """Echo-power columns across the middle of the visible shaft (ROI power, its corner, columns)."""
    from test_sim_physics import _power_columns, _shaft_columns

    pw, xa, ya = _power_columns(it)
    cols = [int(round(p[0])) - xa for p in _shaft_columns(it, nd)]
    return pw, xa, ya, [c for c in cols if 0 <= c < pw.shape[1]]


def needle_stats(kind: str) -> dict:
    from test_sim_physics import _along_axis, _fwhm, _still_correlation
    from needletrack.sim.metrics import displayed_line_fwhm
    from needletrack.sim.needle import shaft_cnr, tip_cnr

    widths, shown = [], []
    for seed in range(1, 7):
        it, frames = _sim(kind, 8.0, seed)
        nd = frames[-1][2]
        if not nd["visible"]:
            continue
        shown += displayed_line_fwhm(frames[-1][0], frames[-1][1])
        pw, _xa, _ya, cols = _columns(it, nd)
        for col in cols:
            v = pw[:, col]
            top = np.nonzero(v > 0.3 * v.max())[0]
            if top.size:
                seg = v[max(top[0] - 8, 0): top[0] + int(2 * it.psf.axial_res_px) + 4]
                widths.append(_fwhm(seg) / it.psf.axial_res_px)

    def tip_over_shaft(angle, seeds):
        out = []
        for seed in seeds:
            it, frames = _sim(kind, angle, seed)
            nd = frames[-1][2]
            if not nd["visible"]:
                continue
            pw, xa, ya = it.last_needle[0][1], it.last_needle[0][0][2], it.last_needle[0][0][0]
            sp = it.probe.sp
            L = float(np.hypot(*(np.array(nd["tip"]) - np.array(nd["tail"]))))
            behind = np.arange(max(3.0 / sp, 0.4 * L), 0.9 * L)
            if L * sp < 3.0 or behind.size == 0:
                continue
            tip = _along_axis(it, nd, pw, xa, ya, -np.arange(0, 0.5 / sp)).mean()
            shaft = _along_axis(it, nd, pw, xa, ya, -behind).mean()
            inc = nd["incidence_deg"]
            pred = 10 ** ((tip_cnr(inc) - shaft_cnr(inc)) * 5.57 * it.contrast_scale / 10)
            out.append((tip / max(shaft, 1e-9), float(pred)))
        return np.array(out).reshape(-1, 2)

    shallow = tip_over_shaft(7.0, range(1, 9))
    steep = tip_over_shaft(45.0, range(1, 9))
    decays = []
    for seed in range(1, 5):
        it, frames = _sim(kind, 6.0, seed, reverb_count=(3, 3))
        nd = frames[-1][2]
        if not nd["visible"]:
            continue
        pw, _xa, _ya, cols = _columns(it, nd)
        spacing = it.id_px / np.cos(np.radians(nd["angle_deg"]))
        for col in cols:
            v = pw[:, col]
            k0 = int(np.argmax(v > 0.3 * v.max()))
            k0 += int(np.argmax(v[k0:k0 + 4]))
            pk = [v[max(int(round(k0 + k * spacing)) - 2, 0): int(round(k0 + k * spacing)) + 3].max(initial=0.0)
                  for k in range(4)]
            decays.append([pk[k + 1] / max(pk[k], 1e-12) for k in range(3)])
    # the same displayed line drawn over the train split's real backgrounds (none where the shared data is absent)
    from needletrack.data import splits

    bgs = splits.background_split("train")
    shown_real = []
    for seed in range(1, 13) if bgs else ():
        _it, frames = _sim(kind, 8.0, seed, backgrounds=bgs)
        if frames[-1][2]["visible"]:
            shown_real += displayed_line_fwhm(frames[-1][0], frames[-1][1])
    corr = [_still_correlation(kind, s) for s in (0, 1, 2)]
    med = (lambda a: float(np.median(a)) if len(a) else None)
    return {"front_wall_fwhm_over_axial_res": med(widths),
            "displayed_line_fwhm_px": med(shown),
            "displayed_line_fwhm_px_real_bg": med(shown_real),
            "tip_over_shaft_7deg": med(shallow[:, 0]),
            "tip_over_shaft_45deg": med(steep[:, 0]),
            "tip_over_shaft_45deg_over_data": med(steep[:, 0] / steep[:, 1]) if len(steep) else None,
            "reverb_peak_ratios_6deg": [float(x) for x in np.median(np.array(decays), axis=0)] if decays else None,
            "still_probe_correlation_min": float(min(corr))}


def _q(v, fmt):
    return "n/a" if v is None else f"{fmt.format(v[1])} [{fmt.format(v[0])}, {fmt.format(v[2])}]"


def markdown(res: dict) -> str:
    kinds = [k for k in KINDS if k in res]
    split = res.get("real_split", "train")
    lines = [f"| row | real ({split} split, n={res['real']['n']}) | " + " | ".join(kinds) + " |",
             "|---" * (len(kinds) + 2) + "|"]
    for key, label, fmt in ROWS:
        lines.append(f"| {label} | {_q(res['real'][key], fmt)} | " + " | ".join(_q(res[k][key], fmt) for k in kinds)
                     + " |")
    lines += ["", "| needle row | physics target | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    f2 = (lambda v: "n/a" if v is None else f"{v:.2f}")
    rows = (("front_wall_fwhm_over_axial_res", "front-wall FWHM of the echo power / axial resolution, 8 deg", "<= 2"),
            ("displayed_line_fwhm_px", "displayed front-wall line: FWHM of the grey profile, px at 448, 8 deg",
             "3-4 (real needle frames, issue 17)"),
            ("displayed_line_fwhm_px_real_bg", "the same line over train-split real backgrounds, px at 448, 8 deg",
             "3-4 (real needle frames, issue 17)"),
            ("tip_over_shaft_7deg", "tip / shaft echo power, last 0.5 mm, 7 deg", "0.4-1.0"),
            ("tip_over_shaft_45deg", "tip / shaft, 45 deg", "> 1"),
            ("tip_over_shaft_45deg_over_data", "tip / shaft at 45 deg over the CNR data's ratio", "about 1 (0.25-4)"))
    for key, label, target in rows:
        lines.append(f"| {label} | {target} | " + " | ".join(f2(res[k]["needle"].get(key)) for k in kinds) + " |")
    lines.append("| reverberation peaks, each over the one before (back wall, 2nd, 3rd), 6 deg | each < 1 | "
                 + " | ".join("n/a" if res[k]["needle"]["reverb_peak_ratios_6deg"] is None else
                              " / ".join(f"{x:.2f}" for x in res[k]["needle"]["reverb_peak_ratios_6deg"])
                              for k in kinds) + " |")
    lines.append("| still-probe consecutive-frame correlation (min of 3) | >= 0.95 | "
                 + " | ".join(f"{res[k]['needle']['still_probe_correlation_min']:.4f}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=24)
    ap.add_argument("--real-split", default="train", choices=("train", "val", "test"))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from needletrack.data import splits
    from needletrack.sim import preset, simulate_sequence

    t0 = time.time()
    res = {"command": "python benchmarks/sim_stats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "real_split": args.real_split}
    real = [frame_stats(img) for img, _m, _meta in splits.background_split(args.real_split)]
    for block in splits.liver_frames(args.real_split):
        real += [frame_stats(f) for f in block[::4]]
    res["real"] = summarize(real) if real else None
    print("real", res["real"], flush=True)
    for kind in args.kinds.split(","):
        st = []
        for i in range(args.sequences):
            frames = [f for f, _m, _n in simulate_sequence(4, size=448, preset=preset(kind), seed=7000 + i,
                                                           needle="absent", frame_step=1)]
            st.append(frame_stats(frames[-1]))
        res[kind] = summarize(st)
        res[kind]["needle"] = needle_stats(kind)
        print(kind, res[kind], flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    if args.out:
        from needletrack.utils import write_json_atomic

        write_json_atomic(f"{args.out}.json", res)
        if res["real"] is not None:
            Path(f"{args.out}.md").write_text(f"Command: `{res['command']}` ({res['wall_s']} s)\n\n" + markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
