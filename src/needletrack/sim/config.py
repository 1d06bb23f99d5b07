"""Simulator configuration: every physical and behavioural quantity as a range, drawn per sequence.

A ``SimConfig`` holds ranges ``(lo, hi)`` (uniform draws unless said otherwise) and probabilities.
``preset(name)`` returns the ``easy``, ``clinical`` (default, paper-like) or ``hard`` configuration.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from needletrack.errors import NeedletrackError

Range = tuple[float, float]

PRESETS = ("easy", "clinical", "hard", "bench")
ANATOMIES = ("breast", "muscle", "nerve")        # the synthetic tissue scenes (anatomy.breast, msk.muscle, msk.nerve)
SCENES = ("mix",) + ANATOMIES + ("bench",)
# clinical: breast stays the largest share (the paper is breast ultrasound); muscle and nerve-block scenes
# (long bright striations and fascia: needle-like hard negatives) make up the rest
CLINICAL_MIX = {"breast": 0.5, "muscle": 0.25, "nerve": 0.25}
HARD_MIX = {"breast": 0.4, "muscle": 0.35, "nerve": 0.25}


def check_anatomy_mix(mix) -> dict:
    """``mix`` as a dict of non-negative weights over :data:`ANATOMIES` (missing ones weigh 0) with a positive
    sum; anything else raises a NeedletrackError with a one-line message."""
    if not isinstance(mix, dict):
        raise NeedletrackError(f"anatomy_mix must be a mapping of weights over {', '.join(ANATOMIES)}, "
                               f"got {type(mix).__name__}")
    unknown = sorted(str(k) for k in mix if k not in ANATOMIES)
    if unknown:
        raise NeedletrackError(f"anatomy_mix: unknown anatomy {', '.join(unknown)} (choose from {', '.join(ANATOMIES)})")
    out = {}
    for k in ANATOMIES:
        w = mix.get(k, 0.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)) or float(w) < 0:
            raise NeedletrackError(f"anatomy_mix: the weight of {k} must be a finite number >= 0, got {w!r}")
        out[k] = float(w)
    if sum(out.values()) <= 0:
        raise NeedletrackError("anatomy_mix: the weights must not all be zero")
    return out

# outer diameter (mm) of needles by Birmingham gauge
GAUGE_OD_MM = {16: 1.651, 17: 1.473, 18: 1.270, 19: 1.067, 20: 0.908, 21: 0.819, 22: 0.718}


@dataclass
class SimConfig:
    # --- probe and display ------------------------------------------------------------------------
    fps: float = 25.0                      # acquisition rate of the simulated cine loop
    depth_mm: Range = (25.0, 55.0)         # imaging depth shown on screen
    content_scale: Range = (0.72, 1.0)     # fraction of the frame height filled by the image sector
    border_prob: float = 0.6               # black borders / off-centre image area (scanner screen grab)
    convex_prob: float = 0.12              # curvilinear (fan) probe instead of linear
    convex_radius_mm: Range = (20.0, 50.0)  # radius of curvature of a convex probe
    convex_depth_mm: Range = (45.0, 90.0)  # convex probes image deeper
    convex_half_angle_deg: Range = (22.0, 35.0)
    overlay_prob: float = 0.6              # burned-in text, depth ruler, focus marker
    freq_mhz: Range = (7.0, 15.0)          # centre frequency of the linear probe
    frac_bandwidth: Range = (0.5, 0.9)     # -6 dB fractional bandwidth of the pulse
    f_number: Range = (1.5, 3.5)           # lateral resolution = lambda * F# at the focus
    focus_frac: Range = (0.25, 0.7)        # focal depth as a fraction of the imaging depth
    speckle_scale: Range = (1.0, 1.6)      # lateral resolution beyond lambda*F# (apodisation widens the main lobe)
    axial_scale: Range = (0.6, 1.0)        # axial resolution beyond the pulse length
    scan_line_px: Range = (1.0, 2.0)       # scan-line spacing (display px; 448-224 lines over 448 px), linear scan conversion
    compound_looks: Range = (4, 9)         # spatial compounding: number of steered looks averaged (integer)
    speckle_reduction: Range = (0.3, 1.0)  # speckle-reduction filter: log-domain blur in grains (scanner.speckle_reduction)
    persistence: Range = (0.15, 0.45)      # frame averaging: weight of the previous displayed frame
    edge_enhance: Range = (0.3, 0.8)       # unsharp-mask gain of the scanner's edge enhancement (1 px at 448 px)
    grey_curve: Range = (1.2, 3.5)         # grey map: exponential post-processing curve (scanner.grey_map)
    grey_floor: Range = (0.0, 8.0)         # grey level of the display floor (the noise floor is dark grey, not black)
    atten_db_cm_mhz: Range = (0.5, 0.9)    # tissue attenuation
    tgc_compensation: Range = (0.25, 0.65)  # fraction of the attenuation the TGC gives back (about 3x darker at depth)
    tgc_ripple_db: Range = (0.0, 5.0)      # slider-shaped residual gain over depth
    dynamic_range_db: Range = (45.0, 65.0)  # log compression to 8 bit (set per patient: real frames range from flat to contrasty)
    gain_db: Range = (-8.0, 15.0)          # overall gain (median grey ~72 as the real train split, dark to bright frames)
    noise_floor_db: Range = (-75.0, -60.0)  # electronic noise, relative to the tissue reference level
    # --- anatomy ------------------------------------------------------------------------------------
    scene: str = "mix"                     # "mix" (one of the anatomies, drawn per sequence by anatomy_mix), "breast"
    #                                        (anatomy.breast), "muscle", "nerve" (msk) or "bench" (water over a block)
    anatomy_mix: dict = field(default_factory=lambda: dict(CLINICAL_MIX))   # scene "mix": weight per anatomy
    pennation_deg: Range = (5.0, 30.0)     # muscle: fibre (striation) angle to the fascia (nerve scenes: half of it)
    striation_mm: Range = (0.5, 2.0)       # muscle: spacing of the perimysium striations
    striation_gain: Range = (1.5, 5.0)     # muscle: striation echo over the fibre echo (peak, before the breaks)
    bone_prob: float = 0.4                 # muscle: a bone surface with its shadow below the bellies (nerve: half)
    nerve_mm: Range = (3.0, 10.0)          # nerve: diameter of the nerve
    water_frac: Range = (0.3, 0.6)         # bench: water/gel above the block, fraction of the depth
    skin_mm: Range = (1.0, 2.5)
    fat_frac: Range = (0.15, 0.45)         # subcutaneous fat thickness as a fraction of depth
    gland_frac: Range = (0.2, 0.45)
    muscle_prob: float = 0.75              # pectoral muscle visible at the bottom
    ligaments: Range = (1, 4)              # Cooper's ligaments (bright curved lines)
    distractor_lines: Range = (0, 1)       # extra straight bright lines (fascia, old tracks)
    standoff_prob: float = 0.15            # gel/water stand-off pad between probe and skin
    standoff_mm: Range = (2.0, 8.0)
    vessels: Range = (0, 2)                # anechoic vessels (integer count)
    cyst_prob: float = 0.3                 # a simple cyst (anechoic, posterior enhancement, edge shadows)
    reverb_streaks: Range = (0, 1)         # vertical reverberation streaks under near-field reflectors (count)
    reflector_loss: float = 0.04           # shadowing: transmission loss per unit of accumulated reflector echo per mm
    lesion_prob: float = 0.9
    lesion_mm: Range = (5.0, 16.0)
    real_background_prob: float = 1.0      # when backgrounds are given: share of sequences using one
    real_speckle_mix: Range = (0.1, 0.25)   # synthetic speckle (matched to the image's grain) mixed into a real frame
    # --- needle ---------------------------------------------------------------------------------------
    gauge: Range = (16, 22)                # integer gauge, uniform
    angle_deg: Range = (3.0, 60.0)         # insertion angle to the skin
    shallow_bias: float = 2.0              # >1 favours shallow angles (beta(1, bias) over the range)
    bend_deg: Range = (0.0, 3.0)           # total bend of the shaft (prob. bend_prob)
    bend_prob: float = 0.3
    needle_gain_db: Range = (-4.0, 4.0)    # brightness beyond the calibrated angle curve
    contrast_scale: Range = (0.4, 0.75)    # phantom CNR -> tissue: dB per CNR unit = 5.57 dB x this
    reverb_decay: Range = (0.15, 0.45)     # comet tail: amplitude ratio of successive repeats
    reverb_count: Range = (1, 4)
    shadow: Range = (0.1, 0.45)            # faint acoustic shadow under the shaft
    dropout: Range = (0.0, 0.5)            # depth of brightness dropouts along the shaft
    slab_mm: Range = (0.4, 0.9)            # half-thickness of the elevational beam slab
    tilt_deg: Range = (0.0, 1.5)           # out-of-plane tilt of the shaft (partial visibility)
    steer_deg: Range = (0.0, 0.0)          # beam steering towards the needle (needle enhancement mode)
    # --- motion ------------------------------------------------------------------------------------
    speed_mm_s: Range = (2.0, 10.0)        # insertion speed while advancing
    pause_s: Range = (0.2, 2.0)
    retract_mm: Range = (0.5, 5.0)
    retract_prob: float = 0.35             # per movement phase
    tremor_mm: Range = (0.02, 0.15)        # hand tremor amplitude (8-12 Hz)
    tremor_deg: Range = (0.05, 0.4)
    probe_drift_mm: Range = (0.2, 2.5)     # slow probe translation (random walk, bounded)
    probe_rot_deg: Range = (0.0, 2.5)
    drag_mm: Range = (0.2, 1.5)            # tissue dragged along with the moving shaft
    withdraw_prob: float = 0.15            # sequence contains a full withdrawal and re-insertion
    out_of_plane_prob: float = 0.25        # sequence contains an out-of-plane episode
    first_visible_prob: float = 0.92       # the first output frame shows the needle
    # probe-move episodes (issue 17): the probe slides and rocks over 0.5-2 s, then holds its new place
    probe_move_prob: float = 0.45          # the sequence has probe moves (1 + Poisson(duration / 10 s) of them)
    probe_move_mm: Range = (2.0, 8.0)      # lateral slide per move (axial share up to 15 %)
    probe_move_deg: Range = (0.0, 5.0)     # in-plane rotation (rocking) per move
    probe_move_s: Range = (0.5, 2.0)       # duration of one move
    move_withdraw_prob: float = 0.5        # per move: the needle is withdrawn (60 %) or leaves the plane (40 %)
    #                                        while the probe moves, then re-enters
    compression_mm: Range = (0.0, 1.5)     # probe pressure: axial squeeze, mm at the bottom of the image
    breathing_mm: Range = (0.0, 2.0)       # breathing: periodic tissue shift (mostly axial), amplitude
    breathing_period_s: Range = (3.0, 5.5)
    pulse_mm: Range = (0.0, 0.2)           # pulse: local periodic expansion around an artery
    pulse_hz: Range = (1.0, 1.6)
    pulse_radius_mm: Range = (2.0, 6.0)
    elev_decorrelation: Range = (0.1, 0.4)  # speckle decorrelation per mm of probe travel (out-of-plane share)
    frame_step: Range = (5, 10)            # output every k-th source frame (k uniform integer)
    every_frame_prob: float = 0.2          # ... or every frame
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scene not in SCENES:
            raise NeedletrackError(f"unknown simulator scene {self.scene!r} (choose one of {', '.join(SCENES)})")
        self.anatomy_mix = check_anatomy_mix(self.anatomy_mix)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise NeedletrackError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)

    def replace(self, **kw) -> "SimConfig":
        return replace(self, **kw)


def preset(name: str = "clinical") -> SimConfig:
    """The ``easy``, ``clinical`` (default), ``hard`` or ``bench`` configuration."""
    if isinstance(name, SimConfig):
        return name
    name = str(name).lower()
    if name == "clinical":
        return SimConfig()
    if name == "easy":
        return SimConfig(
            depth_mm=(25.0, 40.0), border_prob=0.3, convex_prob=0.0, overlay_prob=0.3,
            dynamic_range_db=(45.0, 65.0), gain_db=(-6.0, 15.0), noise_floor_db=(-80.0, -70.0), compound_looks=(5, 9),
            scene="breast",
            speckle_reduction=(0.0, 0.6),   # (0.3-1.0 smoothed 5-9 looks further: laterally smoother than real)
            ligaments=(1, 3), distractor_lines=(0, 0),
            angle_deg=(5.0, 30.0), shallow_bias=1.5, bend_prob=0.1, needle_gain_db=(0.0, 6.0),
            # the clinical range's top (was 0.6-0.9: 35-50 dB over tissue saturated front wall, back wall and first
            # repeat into a band 17 px wide at 448 px, median; now 4.9 px, real needle frames 3-4 px)
            contrast_scale=(0.45, 0.75),
            dropout=(0.0, 0.15), tilt_deg=(0.0, 0.4), slab_mm=(0.6, 1.0),
            tremor_mm=(0.02, 0.08), probe_drift_mm=(0.1, 1.0), probe_rot_deg=(0.0, 1.0),
            withdraw_prob=0.05, out_of_plane_prob=0.05, first_visible_prob=1.0,
            probe_move_prob=0.25, probe_move_mm=(2.0, 5.0), probe_move_deg=(0.0, 2.0), probe_move_s=(0.8, 2.0),
            move_withdraw_prob=0.3, compression_mm=(0.0, 0.6), breathing_mm=(0.0, 0.8), pulse_mm=(0.0, 0.1),
        )
    if name == "hard":
        return SimConfig(
            anatomy_mix=dict(HARD_MIX),
            depth_mm=(35.0, 70.0), border_prob=0.8, convex_prob=0.25, overlay_prob=0.85,
            freq_mhz=(6.0, 10.0), f_number=(2.5, 4.5), speckle_scale=(1.2, 2.0), axial_scale=(1.0, 1.3), compound_looks=(2, 6),
            speckle_reduction=(0.0, 0.8), atten_db_cm_mhz=(0.5, 1.0), tgc_compensation=(0.25, 0.65), tgc_ripple_db=(2.0, 8.0),
            dynamic_range_db=(45.0, 70.0), gain_db=(-8.0, 15.0), noise_floor_db=(-60.0, -45.0),
            ligaments=(2, 6), distractor_lines=(1, 4),
            angle_deg=(20.0, 60.0), shallow_bias=1.0, bend_prob=0.5, bend_deg=(0.5, 4.0),
            needle_gain_db=(-6.0, 0.0), contrast_scale=(0.35, 0.6), shadow=(0.05, 0.3), dropout=(0.3, 0.8),
            slab_mm=(0.3, 0.6), tilt_deg=(0.5, 3.0),
            tremor_mm=(0.05, 0.25), tremor_deg=(0.2, 0.8), probe_drift_mm=(1.0, 4.0), probe_rot_deg=(1.0, 4.0),
            drag_mm=(0.5, 2.5), withdraw_prob=0.3, out_of_plane_prob=0.5, first_visible_prob=0.85,
            probe_move_prob=0.7, probe_move_mm=(3.0, 10.0), probe_move_deg=(1.0, 8.0), probe_move_s=(0.5, 1.5),
            move_withdraw_prob=0.6, compression_mm=(0.5, 2.5), breathing_mm=(0.5, 3.0), pulse_mm=(0.05, 0.3),
        )
    if name == "bench":
        # a needle in water or gel over a tissue block (bench recordings): linear probe, a steady hand
        return SimConfig(
            scene="bench", depth_mm=(25.0, 45.0), border_prob=0.4, convex_prob=0.0, overlay_prob=0.5,
            compound_looks=(2, 6), speckle_reduction=(0.0, 0.6),
            atten_db_cm_mhz=(0.5, 0.7), reverb_streaks=(0, 0),
            angle_deg=(8.0, 45.0), shallow_bias=1.2, bend_prob=0.1, needle_gain_db=(-4.0, 2.0),
            contrast_scale=(0.45, 0.75), dropout=(0.0, 0.2), tilt_deg=(0.0, 0.8), slab_mm=(0.5, 0.9),
            tremor_mm=(0.02, 0.1), probe_drift_mm=(0.1, 1.0), probe_rot_deg=(0.0, 1.0), drag_mm=(0.0, 0.3),
            withdraw_prob=0.2, out_of_plane_prob=0.2, first_visible_prob=0.95,
            probe_move_prob=0.3, probe_move_mm=(2.0, 6.0), probe_move_deg=(0.0, 3.0), move_withdraw_prob=0.5,
            compression_mm=(0.0, 0.0), breathing_mm=(0.0, 0.0), pulse_mm=(0.0, 0.0),
        )
    raise NeedletrackError(f"unknown simulator preset {name!r} (choose one of {', '.join(PRESETS)})")
