"""The needle as one straight segment, fitted robustly to the network's probability map (tracker v2).

A biopsy needle in plane is one straight segment from the entry side to the tip (DESIGN §6). The network
gives a probability per pixel; this module turns it into that segment and decides whether it is a needle.

**Fit** (:func:`fit_segment`). Pixels with probability >= ``low`` are candidates, weighted by probability.
A weighted RANSAC picks the line with the most probability mass within ``tol`` px; the previous segment is
always one of the hypotheses, and lines turned more than ``max_turn_deg`` from it lose half their mass, so
one stray blob cannot tip the axis. The line is refitted by weighted least squares on its inliers. Along the
axis, the extent is found by hysteresis on the ridge profile (the largest probability across the line at each
1-px step): it must reach ``threshold`` somewhere, and it extends over steps >= ``low`` with gaps no longer
than ``max_gap`` px. The run holding the most mass wins; blobs off the line or beyond a gap are not part of it.

**Evidence** (:class:`Segment`): ``score`` is the mean ridge probability where it reaches ``threshold``
(comparable with the v1 score, the mean probability inside the mask), ``contrast`` that
mean minus the mean probability in two bands either side of the line (``3 × width`` away), ``length`` the
extent in px.

**Mask rule** (:func:`segment_mask`): the output mask is the segment drawn at its width, united with every
connected piece of the network's own mask (>= threshold) that touches a band around it; the segment's ends are
then moved out to that mask's extent along the axis (:func:`extend_to_mask`). The drawn segment makes the mask
follow the whole extent found by hysteresis (a dim distal part and the tip stay in), the connected pieces let
the network's exact edges and a slightly bent tip through, and a blob that does not touch the shaft can neither
enter the mask nor move the tip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from needletrack.geometry import line_angle_deg, line_mask, midpoint_offset

RIDGE_HALF = 0.5     # the ridge profile takes the maximum within RIDGE_HALF × tol of the line


@dataclass
class Segment:
    p0: tuple[float, float]       # one end (x, y) px, frame coordinates
    p1: tuple[float, float]       # the other end
    width: float                  # px
    score: float                  # mean ridge probability along the extent
    contrast: float               # score minus the mean probability beside the line
    length: float                 # px

    @property
    def direction(self) -> np.ndarray:
        d = np.subtract(self.p1, self.p0).astype(np.float64)
        n = float(np.hypot(*d))
        return d / n if n > 0 else np.array([1.0, 0.0])

    def scaled(self, f: float) -> "Segment":
        """The same segment in coordinates scaled by ``f`` (ends, width and length; scores unchanged)."""
        return Segment((self.p0[0] * f, self.p0[1] * f), (self.p1[0] * f, self.p1[1] * f), self.width * f,
                       self.score, self.contrast, self.length * f)

    def angle_to(self, other: "Segment") -> float:
        """Unsigned angle between the two lines, degrees (0..90)."""
        ang = line_angle_deg(self.p0, self.p1, other.p0, other.p1)
        return 0.0 if ang is None else ang

    def offset_to(self, other: "Segment") -> float:
        """Distance (px) of this segment's midpoint from the other's line."""
        return midpoint_offset(self.p0, self.p1, other.p0, other.p1)

    def ends_by_entry(self, entry_side: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
        """(tail, tip): the tail is the end nearer the entry border ("left", "right" or "top"; None: the
        shallower end is the tail)."""
        a, b = self.p0, self.p1
        if entry_side == "left":
            return (a, b) if a[0] <= b[0] else (b, a)
        if entry_side == "right":
            return (a, b) if a[0] >= b[0] else (b, a)
        return (a, b) if a[1] <= b[1] else (b, a)


def _line_from(pts: np.ndarray, w: np.ndarray):
    """Weighted total-least-squares line: (centre, unit direction)."""
    c = (pts * w[:, None]).sum(0) / max(w.sum(), 1e-9)
    q = (pts - c) * np.sqrt(w)[:, None]
    _, _, vt = np.linalg.svd(q, full_matrices=False)
    return c, vt[0]


def _sample(prob: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = prob.shape
    xi = np.clip(np.round(xs).astype(int), 0, w - 1)
    yi = np.clip(np.round(ys).astype(int), 0, h - 1)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    return np.where(inside, prob[yi, xi], 0.0)


def fit_segment(prob: np.ndarray, prior: Segment | None = None, threshold: float = 0.5, low: float = 0.2,
                tol: float | None = None, max_gap: float | None = None, max_turn_deg: float = 12.0,
                iterations: int = 48, max_points: int = 2500, seed: int = 0) -> Segment | None:
    """The needle segment in ``prob`` (H×W float in [0, 1]), or None when nothing reaches ``threshold``."""
    prob = np.asarray(prob, dtype=np.float32)
    h, w = prob.shape
    diag = math.hypot(h, w)
    ys, xs = np.nonzero(prob >= low)
    if xs.size < 3 or float(prob.max()) < threshold:
        return None
    wts = prob[ys, xs].astype(np.float64)
    rng = np.random.default_rng(seed)
    if xs.size > max_points:
        keep = rng.choice(xs.size, size=max_points, replace=False, p=wts / wts.sum())
        xs, ys, wts = xs[keep], ys[keep], wts[keep]
    pts = np.column_stack([xs, ys]).astype(np.float64)
    tol = float(tol) if tol is not None else max(2.5, 0.012 * diag)
    max_gap = float(max_gap) if max_gap is not None else max(6.0, 0.04 * diag)
    # hypotheses: pairs of points drawn by weight, plus the prior's line
    p = wts / wts.sum()
    i = rng.choice(len(pts), size=iterations, p=p)
    j = rng.choice(len(pts), size=iterations, p=p)
    a, b = pts[i], pts[j]
    d = b - a
    n = np.hypot(d[:, 0], d[:, 1])
    ok = n > max(2.0, tol)
    a, d = a[ok], d[ok] / n[ok, None]
    if prior is not None:
        a = np.vstack([a, np.asarray(prior.p0, float)[None]])
        d = np.vstack([d, prior.direction[None]])
    if len(a) == 0:
        c, u = _line_from(pts, wts)
        a, d = c[None], u[None]
    # perpendicular distances of every point to every hypothesis
    rel = pts[None, :, :] - a[:, None, :]
    dist = np.abs(rel[..., 0] * d[:, None, 1] - rel[..., 1] * d[:, None, 0])
    mass = ((dist <= tol) * wts[None, :]).sum(1)
    if prior is not None:
        cosang = np.abs(d @ prior.direction)
        mass = np.where(cosang < math.cos(math.radians(max_turn_deg)), 0.5 * mass, mass)
    k = int(np.argmax(mass))
    inl = dist[k] <= tol
    if inl.sum() < 2:
        return None
    c, u = _line_from(pts[inl], wts[inl])
    # ridge profile along the axis, over the whole frame
    t_in = (pts[inl] - c) @ u
    t0, t1 = float(t_in.min()) - max_gap, float(t_in.max()) + max_gap
    ts = np.arange(t0, t1 + 1.0, 1.0)
    nrm = np.array([-u[1], u[0]])
    offs = np.arange(-math.ceil(RIDGE_HALF * tol), math.ceil(RIDGE_HALF * tol) + 1, 1.0)
    X = c[0] + ts[:, None] * u[0] + offs[None, :] * nrm[0]
    Y = c[1] + ts[:, None] * u[1] + offs[None, :] * nrm[1]
    ridge = _sample(prob, X, Y).max(1)
    # hysteresis runs: >= low with gaps <= max_gap, holding at least one step >= threshold
    on = ridge >= low
    idx = np.nonzero(on)[0]
    if idx.size == 0:
        return None
    breaks = np.nonzero(np.diff(idx) > max_gap)[0]
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    best, best_mass = None, -1.0
    for s, e in zip(starts, ends):
        seg = ridge[s:e + 1]
        if seg.max() < threshold:
            continue
        m = float(seg[seg >= low].sum())
        if m > best_mass:
            best, best_mass = (int(s), int(e)), m
    if best is None:
        return None
    s, e = best
    prof = ridge[s:e + 1]
    score = float(prof[prof >= threshold].mean())
    length = float(ts[e] - ts[s])
    q0 = c + ts[s] * u
    q1 = c + ts[e] * u
    width = _width(prob, c, u, nrm, ts[s], ts[e], threshold, tol)
    # contrast: ridge against two bands beside the line
    off = 3.0 * max(width, 2.0)
    tt = ts[s:e + 1]
    side = np.concatenate([
        _sample(prob, c[0] + tt * u[0] + sgn * off * nrm[0], c[1] + tt * u[1] + sgn * off * nrm[1])
        for sgn in (-1.0, 1.0)])
    contrast = score - float(side.mean()) if side.size else score
    return Segment((float(q0[0]), float(q0[1])), (float(q1[0]), float(q1[1])), width, score, contrast, length)


def fit_segment_scaled(prob: np.ndarray, prior: Segment | None, threshold: float, low: float,
                       max_turn_deg: float = 12.0, work: int = 320) -> Segment | None:
    """:func:`fit_segment` on a copy of ``prob`` shrunk so its longer side is at most ``work`` px (bounded
    cost on large frames), with the prior and the result in frame coordinates."""
    import cv2

    h, w = prob.shape
    f = min(1.0, work / max(h, w))
    if f < 1.0:
        prob = cv2.resize(prob, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        prior = prior.scaled(f) if prior is not None else None
    s = fit_segment(prob, prior, threshold=threshold, low=low, max_turn_deg=max_turn_deg)
    return s.scaled(1.0 / f) if s is not None and f < 1.0 else s


def _width(prob, c, u, nrm, ta, tb, threshold, tol) -> float:
    """Median full width (px) of the >= threshold cross-section at up to 16 stations along the extent."""
    ts = np.linspace(ta, tb, 16)
    r = max(math.ceil(2.5 * tol), 3)
    offs = np.arange(-r, r + 1, 1.0)
    X = c[0] + ts[:, None] * u[0] + offs[None, :] * nrm[0]
    Y = c[1] + ts[:, None] * u[1] + offs[None, :] * nrm[1]
    across = _sample(prob, X, Y) >= threshold
    widths = across.sum(1)
    widths = widths[widths > 0]
    return float(np.clip(np.median(widths), 1.5, 2 * r)) if widths.size else 1.5


MASK_RULES = ("union", "clip")


def segment_mask(shape, seg: Segment, net_mask: np.ndarray | None = None, rule: str = "union",
                 collinear: float = 0.8) -> np.ndarray:
    """The output mask (module doc). ``union``: the segment drawn at its width, plus every connected piece of the
    network's mask that touches a band of ``3 × width`` around the segment, or that lies on the segment's line
    beyond a gap (at least ``collinear`` of its pixels inside that band extended across the frame: a needle is
    straight, so a piece ahead on its line is its tip past a dim stretch); a blob off the line stays out.
    ``clip``: only the network mask inside the band."""
    import cv2

    if rule not in MASK_RULES:
        raise ValueError(f"mask rule must be one of {MASK_RULES}, got {rule!r}")
    bw = 3.0 * seg.width + 2.0
    band = line_mask(shape, seg.p0, seg.p1, bw)
    if rule == "clip" and net_mask is not None:
        return net_mask & band
    m = line_mask(shape, seg.p0, seg.p1, seg.width)
    if net_mask is not None and net_mask.any():
        n, lab = cv2.connectedComponents(net_mask.astype(np.uint8), connectivity=8)
        keep = set(int(v) for v in np.unique(lab[band & net_mask]) if v > 0)
        # pieces on the segment's infinite line: perpendicular distance of each network-mask pixel to it
        ys, xs = np.nonzero(net_mask)
        d = seg.direction
        dist = np.abs((xs - seg.p0[0]) * d[1] - (ys - seg.p0[1]) * d[0])
        labs = lab[ys, xs]
        sizes = np.bincount(labs, minlength=n)
        on_line = np.bincount(labs[dist <= bw / 2.0], minlength=n)
        for k in range(1, n):
            if k not in keep and sizes[k] >= 4 and on_line[k] >= collinear * sizes[k]:
                keep.add(k)
        if keep:
            m |= np.isin(lab, sorted(keep))
    return m


def extend_to_mask(seg: Segment, mask: np.ndarray) -> Segment:
    """The segment's ends moved out to the mask's extent along its axis (the tip follows the connected distal
    part that :func:`segment_mask` kept)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return seg
    p0 = np.asarray(seg.p0, float)
    d = seg.direction
    t = (xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]
    lo, hi = float(min(t.min(), 0.0)), float(max(t.max(), seg.length))
    return clipped(seg, lo, hi)


def image_support(img: np.ndarray, p0, p1, width: float) -> float:
    """How clearly the *image* (not the network) shows a bright line from ``p0`` to ``p1``: the brightest
    row of the mean cross-profile within ``max(width, 2)`` px of the line, against two bands beside it, in
    units of the bands' standard deviation (a contrast-to-noise ratio; about 0 where nothing is there).

    The brightest row, not the centre: a needle's echo is its front wall, one half diameter above the
    centre line of the labelled shaft. Used by the tracker to keep a segment the network has become unsure
    of while the image still shows it, and to keep the distal part the network has lost (docs/tracker.md)."""
    a = np.asarray(p0, float)
    d = np.asarray(p1, float) - a
    length = float(np.hypot(*d))
    if length < 2.0:
        return 0.0
    u = d / length
    nrm = np.array([-u[1], u[0]])
    near = max(float(width), 2.0)
    far = max(3.0 * near, 8.0)
    ts = np.linspace(0.0, length, max(8, int(length)))
    offs = np.arange(-far, far + 0.5, 0.5)
    X = a[0] + ts[None, :] * u[0] + offs[:, None] * nrm[0]
    Y = a[1] + ts[None, :] * u[1] + offs[:, None] * nrm[1]
    h, w = img.shape
    inside = (X >= 0) & (X <= w - 1) & (Y >= 0) & (Y <= h - 1)
    cols = inside.all(0)                  # stations whose whole cross-section lies in the frame
    if cols.sum() < 4:
        return 0.0
    v = _sample(np.asarray(img, np.float32), X[:, cols].ravel(), Y[:, cols].ravel()).reshape(len(offs), -1)
    prof = v.mean(1)
    core = np.abs(offs) <= near
    band = np.abs(offs) >= 1.5 * near + 2.0
    bg = v[band]
    peak = float(prof[core].max())
    return float((peak - bg.mean()) / (bg.std() + 1e-6))


def clipped(seg: Segment, t0: float, t1: float) -> Segment:
    """The part of ``seg`` between distances ``t0`` and ``t1`` (px) from ``p0`` along it."""
    p0 = np.asarray(seg.p0, float)
    d = seg.direction
    q0, q1 = p0 + t0 * d, p0 + t1 * d
    return Segment((float(q0[0]), float(q0[1])), (float(q1[0]), float(q1[1])), seg.width, seg.score,
                   seg.contrast, float(t1 - t0))


def span_along(seg: Segment, prior: Segment) -> tuple[float, float]:
    """(lo, hi): the distances from ``seg.p0`` along ``seg``'s axis that cover ``seg`` and ``prior``'s ends projected
    on that axis (lo <= 0, hi >= seg.length); ``clipped(seg, lo, hi)`` is ``seg`` out to ``prior``'s extent."""
    p0 = np.asarray(seg.p0, float)
    d = seg.direction
    tp = [float((np.asarray(q, float) - p0) @ d) for q in (prior.p0, prior.p1)]
    return min(0.0, *tp), max(seg.length, *tp)


class MotionPrior:
    """Carry the last segment forward with the image's own motion (tracker v2's motion cue).

    Pyramidal Lucas-Kanade flow (OpenCV) follows up to 16 points on the last segment and 16 around it from the
    previous frame to this one, on a copy at most ``work`` px wide; the median displacement of the points that
    were followed moves the segment. The fit then searches around where the needle went, not where it was, so
    a probe move does not drop it. About 1 ms per frame; the previous frame is kept at work size only."""

    def __init__(self, work: int = 256, points: int = 16):
        self.work = int(work)
        self.points = int(points)
        self.prev = None
        self.scale = 1.0

    def carry(self, img: np.ndarray, seg: Segment | None) -> Segment | None:
        import cv2

        a = np.asarray(img, dtype=np.float32)
        h, w = a.shape
        f = min(1.0, self.work / max(h, w))
        small = cv2.resize(a, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
            if f < 1.0 else a
        hi = float(small.max()) or 1.0
        cur = np.clip(small * (255.0 / hi if hi > 1.5 else 255.0), 0, 255).astype(np.uint8)
        prev, self.prev, self.scale = self.prev, cur, f
        if seg is None or prev is None or prev.shape != cur.shape:
            return seg
        t = np.linspace(0.0, 1.0, self.points)
        p0 = np.asarray(seg.p0) * f
        p1 = np.asarray(seg.p1) * f
        on = p0[None] + t[:, None] * (p1 - p0)[None]
        d = (p1 - p0) / max(float(np.hypot(*(p1 - p0))), 1e-6)
        nrm = np.array([-d[1], d[0]])
        beside = np.concatenate([on + 6.0 * nrm, on - 6.0 * nrm])
        pts = np.concatenate([on, beside]).astype(np.float32).reshape(-1, 1, 2)
        nxt, st, _err = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, winSize=(15, 15), maxLevel=2)
        ok = st.reshape(-1).astype(bool)
        if ok.sum() < 4:
            return seg
        shift = np.median((nxt - pts).reshape(-1, 2)[ok], axis=0) / f
        if not np.all(np.isfinite(shift)):
            return seg
        return Segment((seg.p0[0] + shift[0], seg.p0[1] + shift[1]), (seg.p1[0] + shift[0], seg.p1[1] + shift[1]),
                       seg.width, seg.score, seg.contrast, seg.length)
