"""`needletrack info INPUT [--json]`: frame count, size, fps, pixel spacing, format and duration of a cine."""
from __future__ import annotations

import json

HELP = "describe a cine (video, DICOM, image folder or PLUS .mha): frames, size, fps, pixel spacing"


def add_arguments(p):
    p.add_argument("input", metavar="INPUT", help="video file, DICOM file, image folder or .mha/.igs.mha")
    p.add_argument("--json", action="store_true", help="print JSON (keys frames, width, height, fps, "
                                                       "pixel_spacing_mm, format, duration)")
    p.add_argument("--check", action="store_true", help="also decode every frame (finds truncated files)")


def run(args) -> int:
    from needletrack.io import open_cine

    with open_cine(args.input) as cine:
        info = cine.info()
        if args.check:
            n = sum(1 for _ in cine)
            info["decoded_frames"] = n
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    sp = info["pixel_spacing_mm"]
    rows = [
        ("path", info["path"]),
        ("format", info["format"]),
        ("frames", info["frames"]),
        ("size", f"{info['width']} x {info['height']} (width x height)"),
        ("fps", "unknown" if info["fps"] is None else f"{info['fps']:.3f}"),
        ("duration", "unknown" if info["duration"] is None else f"{info['duration']:.3f} s"),
        ("pixel spacing", "unknown" if sp is None else f"{sp[0]:.4f} x {sp[1]:.4f} mm (row x col)"),
    ]
    if "decoded_frames" in info:
        rows.append(("decoded frames", info["decoded_frames"]))
    for note in info["notes"]:
        rows.append(("note", note))
    for k, v in rows:
        print(f"{k:15s} {v}")
    return 0
