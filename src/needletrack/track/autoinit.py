"""Training-free needle detection: oriented ridge filtering + Hough line fit + contrast and brightness tests.

``detect_needle(frame) -> H×W bool mask | None`` finds one straight bright shaft, or says it found none
(``None``) rather than guessing on plain tissue. ``find_needle_line`` returns the fitted segment with its
evidence. Used to start the tracker (``auto=True``) and as a per-frame detector baseline.

Method (all on a copy scaled so the longer side is at most ``work_size`` px):

1. Oriented line filter bank (an even, Gabor-like kernel): for each of ``n_orient`` orientations, a kernel
   that is long along the line (Gaussian envelope, ``length_frac`` of the image diagonal) and, across it,
   the negative second derivative of a Gaussian (a bright ridge). Speckle is short and isotropic, so its
   response to a long kernel averages out; a shaft's adds up. Two scales through an image ``pyramid``.
2. The best response over scales and orientations as a robust z-score (median/MAD over the imaged region,
   black padding and screen borders excluded); pixels above ``z_thresh`` are the evidence.
3. Probabilistic Hough transform (cv2.HoughLinesP) on the evidence (segments outside ``angle_range`` dropped
   first, so screen borders and fascia do not crowd out the candidates); each candidate segment is refitted by
   least squares (principal axis) to the evidence pixels near it whose orientation agrees, cut to the
   longest run with gaps shorter than ``max_gap_frac`` of the diagonal, and its ends refined on the image's
   own centre-minus-flank contrast (the long filter smears ends).
4. Tests that decline: length at least ``min_length_frac`` of the diagonal; angle to the horizontal within
   ``angle_range`` (an insertion is neither flat like fascia nor vertical like a reverberation/shadow
   edge); contrast-to-noise of the shaft against flanking bands at least ``min_cnr``; share of the segment
   covered by evidence at least ``min_coverage``; mean brightness above ``min_bright_rank`` of the imaged
   pixels (a needle is among the brightest echoes); its shallow end within ``max_edge_frac`` of the diagonal
   from the imaged region's border (a needle comes in from outside).
5. The best candidate (CNR × length) is drawn at its measured width (cross-profile FWHM) from its tip (the
   deeper end) back to where its line leaves the imaged region (``extend_to_border``), ``centre_shift`` of
   its width deeper (the echo is the needle's front wall).

Thresholds were chosen on simulated sequences and 240 real needle-free images (README "Auto-init").

Length: over 400 lines on purpose, one idea (the detector with its configuration, which also holds the start
rules' settings because the tracker passes one object, and the features its tests use); the rules that
confirm a start are :mod:`needletrack.track.autostart`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from needletrack.geometry import shallow_first
from needletrack.track.frames import to_float01


@dataclass(frozen=True)
class NeedleLine:
    p0: tuple[float, float]      # one end (x, y), frame pixels
    p1: tuple[float, float]      # other end
    width_px: float
    cnr: float
    coverage: float
    angle_deg: float             # orientation to the horizontal, 0..90 (unsigned)

    @property
    def length_px(self) -> float:
        return math.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1])


@dataclass
class AutoInitConfig:
    work_size: int = 256
    n_orient: int = 12
    length_frac: float = 0.10
    ridge_sigma: float = 1.5
    pyramid: tuple[int, ...] = (1, 2)
    min_bright_rank: float = 0.97
    extend_to_border: bool = True
    # the line found is the front wall's echo and the needle lies below it: the line is moved this share of its
    # width deeper (training-seed clips: IoU >= 0.5 with the needle for 30 % -> 37 % of the needle's lines)
    centre_shift: float = 0.25
    z_thresh: float = 4.0
    min_length_frac: float = 0.12
    max_gap_frac: float = 0.04
    angle_range: tuple[float, float] = (10.0, 85.0)
    min_cnr: float = 2.0
    min_coverage: float = 0.55
    max_candidates: int = 20
    # a needle comes in from outside: the shallow end of its visible shaft lies within this share of the diagonal
    # of the imaged region's border (most simulated tissue lines do not; docs/tracker.md "Starting without ...")
    max_edge_frac: float = 0.1
    # a start (Tracker auto=True) declines rather than guesses (autostart.StartConfirmer): the same line in
    # ``confirm_frames`` consecutive frames (within ``confirm_deg`` and ``confirm_offset_frac`` of the diagonal)
    # at CNR >= ``start_min_cnr``, or a line passing the loose ``motion_*`` tests whose shaft moves along its axis
    # towards its tip relative to the tissue beside it over ``motion_frames`` frames (by
    # ``motion_min_advance_frac`` of the diagonal in all, ``motion_step_frac`` in ``motion_min_steps`` frames)
    # and which itself moves towards its tip in the image (``motion_min_own_frac`` in all; a line fixed in the
    # image, such as burned-in text, over tissue sliding the other way moves only relative to the tissue)
    # the held rule is off by default: a bright straight line from the edge that merely holds (fascia, bone, the
    # hard preset's needle-like lines) started and kept wrong tracks on needle-free clips; a line pushed in is
    # the evidence taken (docs/tracker.md)
    held_start: bool = False
    confirm_frames: int = 3
    confirm_deg: float = 6.0
    confirm_offset_frac: float = 0.015
    start_min_cnr: float = 4.0
    motion_start: bool = True
    motion_min_cnr: float = 2.0
    motion_min_bright_rank: float = 0.9
    motion_min_angle: float = 5.0
    motion_min_length_frac: float = 0.06
    motion_min_coverage: float = 0.4
    motion_frames: int = 3
    motion_min_advance_frac: float = 0.0028
    motion_step_frac: float = 0.0003
    motion_min_steps: int = 2
    motion_min_own_frac: float = 0.0
    motion_flow_scale: float = 0.5       # Farneback flow on the work image shrunk by this factor
    # the learned rule ("seen", where weights/detector.safetensors exists): the learned single-frame detector
    # (needletrack.track.detector) finds a segment with ridge probability >= ``learned_min_score`` in
    # ``learned_frames`` consecutive frames, the same line each time (``confirm_deg``, ``confirm_offset_frac``),
    # at least ``learned_min_length_frac`` of the diagonal long, its shallow end within ``learned_max_edge_frac``
    # of the diagonal of the imaged region's border (None: anywhere)
    # (chosen on validation, docs/tracker.md "The learned single-frame detector"). Where the detector is loaded,
    # the training-free rules above run beside it only with ``training_free_with_learned`` (they found no clip
    # that it did not, and cost 30-40 ms per searching frame)
    learned_start: bool = True
    learned_frames: int = 2
    learned_min_score: float = 0.97
    learned_min_length_frac: float = 0.1
    learned_max_edge_frac: float | None = 0.1
    training_free_with_learned: bool = False


@functools.lru_cache(maxsize=256)
def _line_kernel(theta: float, sigma_w: float, half_len: float) -> np.ndarray:
    """Zero-mean kernel: Gaussian along direction theta, -d²/dn² Gaussian across (a bright ridge). Cached: the
    same few dozen kernels serve every frame of a stream (read-only)."""
    r = int(math.ceil(max(half_len * 2.0, sigma_w * 4.0)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    u = xx * c + yy * s          # along the line
    n = -xx * s + yy * c         # across
    along = np.exp(-0.5 * (u / half_len) ** 2)
    across = (1.0 - (n / sigma_w) ** 2) * np.exp(-0.5 * (n / sigma_w) ** 2)
    k = along * across
    k -= k.mean()
    k /= np.abs(k).sum()
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k


def _ridge_response(img: np.ndarray, cfg: AutoInitConfig) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = img.shape
    diag = math.hypot(h, w)
    half_len = max(4.0, cfg.length_frac * diag / 2.0)
    thetas = np.arange(cfg.n_orient) * (math.pi / cfg.n_orient)
    best = np.full(img.shape, -np.inf, dtype=np.float32)
    arg = np.zeros(img.shape, dtype=np.int16)
    for i, th in enumerate(thetas):
        r = cv2.filter2D(img, cv2.CV_32F, _line_kernel(th, cfg.ridge_sigma, half_len),
                         borderType=cv2.BORDER_REFLECT)
        better = r > best
        best[better] = r[better]
        arg[better] = i
    return best, thetas[arg]


def _runs(t_sorted: np.ndarray, max_gap: float) -> tuple[float, float]:
    """Longest run of sorted positions whose consecutive gaps are <= max_gap: (start, end)."""
    gaps = np.flatnonzero(np.diff(t_sorted) > max_gap)
    starts = np.concatenate([[0], gaps + 1])
    ends = np.concatenate([gaps, [len(t_sorted) - 1]])
    spans = t_sorted[ends] - t_sorted[starts]
    k = int(np.argmax(spans))
    return float(t_sorted[starts[k]]), float(t_sorted[ends[k]])


def _sample(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at (xs, ys) (any count; borders reflect)."""
    import cv2

    n = np.size(xs)
    cols = 1024 if n > 1024 else max(n, 1)
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = np.ravel(xs), np.ravel(ys)       # remap's map is at most 32767 wide: fold it into rows
    out = cv2.remap(np.asarray(img, np.float32), mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101)
    return out.ravel()[:n]


def _refine_ends(img, c, u, t0, t1, width, max_gap):
    """Trim/extend the segment's ends to where the shaft's local contrast (centre minus flanks) holds.

    The long line filter smears a shaft's ends by about half its length; the raw image does not."""
    nrm = np.array([-u[1], u[0]])
    h, w = img.shape
    margin = 0.25 * (t1 - t0)
    ts = np.arange(t0 - margin, t1 + margin + 0.5, 1.0)
    centre = c[None, :] + ts[:, None] * u[None, :]
    ok = (centre[:, 0] >= 0) & (centre[:, 0] <= w - 1) & (centre[:, 1] >= 0) & (centre[:, 1] <= h - 1)
    ts, centre = ts[ok], centre[ok]
    if len(ts) < 8:
        return t0, t1
    hw = max(width / 2.0, 1.0)
    core_o = np.arange(-hw, hw + 0.01, 0.5)
    flank_o = np.concatenate([s * np.arange(max(1.5 * width, 3.0), max(3.0 * width, 6.0), 1.0) for s in (-1, 1)])
    offs = np.concatenate([core_o, flank_o])
    p = centre[None, :, :] + offs[:, None, None] * nrm[None, None, :]      # one batched lookup
    v = _sample(img, p[..., 0], p[..., 1]).reshape(len(offs), -1)
    core, flank = v[:len(core_o)].mean(axis=0), v[len(core_o):].mean(axis=0)
    d = np.convolve(core - flank, np.ones(5) / 5.0, mode="same")
    mid = (ts >= t0 + 0.25 * (t1 - t0)) & (ts <= t1 - 0.25 * (t1 - t0))
    if not mid.any():
        return t0, t1
    ref = float(np.median(d[mid]))
    if ref <= 0:
        return t0, t1
    on = ts[d >= 0.5 * ref]
    if on.size < 2:
        return t0, t1
    # the run of "on" positions (gap-limited) that covers the middle of the segment
    gaps = np.flatnonzero(np.diff(on) > max(0.5 * max_gap, 4.0))
    starts = np.concatenate([[0], gaps + 1])
    ends = np.concatenate([gaps, [len(on) - 1]])
    tm = 0.5 * (t0 + t1)
    best = None
    for a, b in zip(starts, ends):
        span = on[b] - on[a]
        cover = on[a] <= tm <= on[b]
        key = (cover, span)
        if best is None or key > best[0]:
            best = (key, (float(on[a]), float(on[b])))
    return best[1]


def profile_stats(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float):
    """CNR of the shaft against flanking bands, and the shaft's width (FWHM of the mean cross-profile)."""
    d = p1 - p0
    length = float(np.hypot(*d))
    u = d / length
    nrm = np.array([-u[1], u[0]])
    ts = np.linspace(0.0, length, max(8, int(length)))
    half = max(3.0 * width, 6.0)
    offs = np.arange(-half, half + 0.5, 0.5)
    pts = p0[None, None, :] + ts[None, :, None] * u[None, None, :] + offs[:, None, None] * nrm[None, None, :]
    h, w = img.shape
    inside = (pts[..., 0] >= 0) & (pts[..., 0] <= w - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= h - 1)
    vals = _sample(img, pts[..., 0].ravel(), pts[..., 1].ravel()).reshape(pts.shape[:2])
    vals = np.where(inside, vals, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            prof = np.nanmean(vals, axis=1)
    core = np.abs(offs) <= max(width / 2.0, 1.0)
    band = (np.abs(offs) >= max(1.5 * width, 3.0))
    line_vals = vals[core].ravel()
    bg_vals = vals[band].ravel()
    line_vals = line_vals[np.isfinite(line_vals)]
    bg_vals = bg_vals[np.isfinite(bg_vals)]
    if line_vals.size < 4 or bg_vals.size < 4:
        return 0.0, width
    cnr = (line_vals.mean() - bg_vals.mean()) / (bg_vals.std() + 1e-6)
    # width: FWHM of the cross-profile around the centre
    bg = float(np.nanmedian(prof[band]))
    peak = float(np.nanmax(prof[np.abs(offs) <= max(width, 2.0)]))
    if not np.isfinite(peak) or peak <= bg:
        return float(cnr), width
    above = prof >= bg + 0.5 * (peak - bg)
    centre = int(np.argmin(np.abs(offs)))
    lo = centre
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = centre
    while hi < len(offs) - 1 and above[hi + 1]:
        hi += 1
    fwhm = (hi - lo + 1) * 0.5
    return float(cnr), float(fwhm)


def _content_mask(img: np.ndarray) -> np.ndarray:
    """The imaged region (not the black padding/letterbox around a sector or a scanner's screen)."""
    import cv2

    blur = cv2.GaussianBlur(img, (0, 0), 2.0)
    m = (blur > 0.03).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    return m.astype(bool)


def _multiscale_evidence(small: np.ndarray, content: np.ndarray, cfg: "AutoInitConfig"):
    """Per pixel: the best robust z-score over scales and orientations, its orientation and its scale.

    Scales come from a pyramid: the same line filter (``ridge_sigma``) on the image shrunk by each factor in
    ``pyramid`` (1, 2, 4: shafts about 3, 6 and 12 work pixels wide), responses brought back to full size."""
    import cv2

    h, w = small.shape
    inner = cv2.erode(content.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    zbest = np.full(small.shape, -np.inf, np.float32)
    obest = np.zeros(small.shape, np.float32)
    sbest = np.zeros(small.shape, np.float32)
    for k in cfg.pyramid:
        hk, wk = max(16, round(h / k)), max(16, round(w / k))
        img_k = small if k == 1 else cv2.resize(small, (wk, hk), interpolation=cv2.INTER_AREA)
        resp, orient = _ridge_response(img_k, cfg)
        if k != 1:
            resp = cv2.resize(resp, (w, h), interpolation=cv2.INTER_LINEAR)
            orient = cv2.resize(orient.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        vals = resp[inner] if inner.sum() > 64 else resp.ravel()
        med = float(np.median(vals))
        mad = float(np.median(np.abs(vals - med))) * 1.4826 + 1e-6
        z = (resp - med) / mad
        better = z > zbest
        zbest[better] = z[better]
        obest[better] = orient[better]
        sbest[better] = cfg.ridge_sigma * k
    zbest[~inner] = 0.0
    return zbest, obest, sbest


def _candidates(small: np.ndarray, cfg: "AutoInitConfig") -> list[dict]:
    """Straight bright segments in a work-sized image, each with the features the decision uses."""
    import cv2

    h, w = small.shape
    diag = math.hypot(h, w)
    content = _content_mask(small)
    if content.sum() < 0.05 * h * w:
        return []
    z, orient, scale = _multiscale_evidence(small, content, cfg)
    evid = (z > cfg.z_thresh).astype(np.uint8)
    if int(evid.sum()) < 8:
        return []
    min_len = cfg.min_length_frac * diag
    segs = cv2.HoughLinesP(evid * 255, rho=1, theta=math.pi / 180, threshold=max(8, int(min_len * 0.4)),
                           minLineLength=int(min_len * 0.6), maxLineGap=int(max(2, cfg.max_gap_frac * diag)))
    if segs is None:
        return []
    segs = np.asarray(segs, dtype=np.float64).reshape(-1, 4)
    seg_ang = np.degrees(np.arctan2(np.abs(segs[:, 3] - segs[:, 1]), np.abs(segs[:, 2] - segs[:, 0])))
    segs = segs[(seg_ang >= cfg.angle_range[0] - 3.0) & (seg_ang <= cfg.angle_range[1] + 3.0)]
    if not len(segs):   # screen borders, fascia and shadow edges must not crowd out the candidates
        return []
    lens = np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1])
    order = np.argsort(-lens)[: cfg.max_candidates]
    ys, xs = np.nonzero(evid)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    pt_orient = orient[ys, xs]
    pt_scale = scale[ys, xs]
    content_vals = small[content]
    out: list[dict] = []
    seen: list[tuple] = []
    for i in order:
        a, b = segs[i, :2], segs[i, 2:]
        u = (b - a) / max(lens[i], 1e-6)
        nrm = np.array([-u[1], u[0]])
        if any(abs(float(np.dot(nrm, s_[1]))) > 0.995 and abs(float(np.dot(a - s_[0], s_[1]))) < 4 for s_ in seen):
            continue  # near-duplicate of a line already examined
        seen.append((a, nrm))
        theta_seg = math.atan2(u[1], u[0]) % math.pi
        dtheta = np.abs((pt_orient - theta_seg + math.pi / 2) % math.pi - math.pi / 2)
        near = (np.abs((pts - a) @ nrm) <= np.maximum(2.0, 2.0 * pt_scale)) & (dtheta <= math.radians(20))
        if near.sum() < 8:
            continue
        q = pts[near]
        c = q.mean(axis=0)
        evals, evecs = np.linalg.eigh((q - c).T @ (q - c) / len(q))
        u = evecs[:, int(np.argmax(evals))]
        nrm = np.array([-u[1], u[0]])
        sig = float(np.median(pt_scale[near]))
        near = (np.abs((pts - c) @ nrm) <= max(2.0, 2.0 * sig)) & (dtheta <= math.radians(25))
        if near.sum() < 8:
            continue
        t = np.sort((pts[near] - c) @ u)
        t0, t1 = _runs(t, cfg.max_gap_frac * diag)
        if t1 - t0 < 0.5 * min_len:
            continue
        in_run = t[(t >= t0) & (t <= t1)]
        coverage = min(1.0, len(np.unique(np.round(in_run))) / max(t1 - t0, 1.0))
        t0, t1 = _refine_ends(small, c, u, t0, t1, 2.0 * sig, cfg.max_gap_frac * diag)
        p0, p1 = c + t0 * u, c + t1 * u
        length = t1 - t0
        if length < 0.5 * min_len:
            continue
        # a needle comes in from outside: how far its shallow end lies from the imaged region's border (tested
        # here, before the costlier features)
        tail, tip = shallow_first(p0, p1)
        edge = float(np.hypot(*(_extend_to_content_border(small, tail, tip, step=2.0, content=content) - tail)))
        if edge > cfg.max_edge_frac * diag:
            continue
        cnr, width = profile_stats(small, p0, p1, 2.0 * sig)
        cnr2, width2 = profile_stats(small, p0, p1, max(width, 1.5))   # again, the core at the measured width
        if cnr2 > cnr:
            cnr, width = cnr2, width2
        # how bright the shaft is among the imaged pixels (needles are among the brightest echoes)
        n_s = max(8, int(length))
        tt = np.linspace(0.0, 1.0, n_s)
        line_pts = p0[None, :] + tt[:, None] * (p1 - p0)[None, :]
        line_mean = float(np.mean(_sample(small, line_pts[:, 0], line_pts[:, 1])))
        bright_rank = float(np.mean(content_vals < line_mean))
        # straightness: rms distance of the evidence pixels from the fitted line, relative to the scale
        q = pts[near]
        tq = (q - c) @ u
        qq = q[(tq >= t0) & (tq <= t1)]
        resid = float(np.sqrt(np.mean(((qq - c) @ nrm) ** 2))) if len(qq) else 99.0
        out.append({
            "p0": p0, "p1": p1, "length": float(length), "length_frac": float(length / diag),
            "angle": float(math.degrees(math.atan2(abs(u[1]), abs(u[0])))), "cnr": float(cnr),
            "width": float(width), "sigma": sig, "coverage": float(coverage), "bright_rank": bright_rank,
            "line_mean": line_mean, "resid": resid, "z_mean": float(np.mean(z[ys[near], xs[near]])),
            "edge_frac": edge / diag,
        })
    return out


def _accept(cand: dict, cfg: "AutoInitConfig") -> bool:
    return (cand["length_frac"] >= cfg.min_length_frac
            and cfg.angle_range[0] <= cand["angle"] <= cfg.angle_range[1]
            and cand["cnr"] >= cfg.min_cnr
            and cand["coverage"] >= cfg.min_coverage
            and cand["bright_rank"] >= cfg.min_bright_rank
            and cand["edge_frac"] <= cfg.max_edge_frac)


def _work_image(frame, cfg: "AutoInitConfig"):
    import cv2

    img = to_float01(frame, "auto-init frame")
    H, W = img.shape
    f = min(1.0, cfg.work_size / max(H, W))
    small = cv2.resize(img, (max(8, round(W * f)), max(8, round(H * f))), interpolation=cv2.INTER_AREA) \
        if f < 1.0 else img
    return img, cv2.GaussianBlur(small, (0, 0), 0.7), f


def _extend_to_content_border(small, p_tail, p_tip, step: float = 1.0, content=None):
    """Walk from the tail end away from the tip while inside the imaged region: the shaft comes from outside."""
    content = _content_mask(small) if content is None else content
    h, w = small.shape
    d = np.asarray(p_tail, np.float64) - np.asarray(p_tip, np.float64)
    n = float(np.hypot(*d))
    if n < 1e-6:
        return np.asarray(p_tail, np.float64)
    d /= n
    p = np.asarray(p_tail, np.float64)
    while True:
        q = p + step * d
        xi, yi = int(round(q[0])), int(round(q[1]))
        if not (0 <= xi < w and 0 <= yi < h) or not content[yi, xi]:
            return p
        p = q


def line_of(cand: dict, small: np.ndarray, f: float, cfg: AutoInitConfig) -> NeedleLine:
    """A candidate (work pixels) as a :class:`NeedleLine` in frame pixels: ``p1`` the tip (the deeper end),
    ``p0`` the other end, or, with ``cfg.extend_to_border``, where its line leaves the imaged region."""
    c = cand
    tail, tip = shallow_first(c["p0"], c["p1"])
    if cfg.extend_to_border:
        tail = _extend_to_content_border(small, tail, tip)
    d = tip - tail
    nrm = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    shift = cfg.centre_shift * c["width"] * (nrm if nrm[1] >= 0 else -nrm)      # towards depth
    tail, tip = tail + shift, tip + shift
    return NeedleLine(p0=(float(tail[0] / f), float(tail[1] / f)), p1=(float(tip[0] / f), float(tip[1] / f)),
                      width_px=float(max(2.0, c["width"] / f)), cnr=c["cnr"], coverage=c["coverage"],
                      angle_deg=c["angle"])


def find_needle_line(frame, cfg: AutoInitConfig | None = None) -> NeedleLine | None:
    """The most needle-like straight bright segment in ``frame`` (:func:`line_of`), or ``None`` if nothing
    passes the tests."""
    cfg = cfg or AutoInitConfig()
    img, small, f = _work_image(frame, cfg)
    ok = [c for c in _candidates(small, cfg) if _accept(c, cfg)]
    return line_of(max(ok, key=lambda c: c["cnr"] * c["length"]), small, f, cfg) if ok else None


def detect_needle(frame, cfg: AutoInitConfig | None = None) -> np.ndarray | None:
    """H×W bool mask of the needle found in ``frame`` (drawn at its measured width), or ``None``."""
    from needletrack.geometry import line_mask

    line = find_needle_line(frame, cfg)
    if line is None:
        return None
    shape = np.asarray(frame).shape[:2]
    m = line_mask(shape, line.p0, line.p1, line.width_px)
    return m if m.any() else None
