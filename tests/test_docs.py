"""Every code block in README.md and docs/ that is marked runnable runs here, on tiny inputs, so the docs
cannot rot (issue 19).

The fence's info string says what a block is:

* ```` ```python ```` — run (in a fresh namespace, in the file's scratch folder);
* ```` ```console ```` — each ``$ command`` line is run there (``needletrack …`` in-process, anything else
  with bash) and must exit 0; the other lines are the output it shows and are not compared;
* ```` ```python not-run ```` / ```` ```console not-run ```` — shown only: long runs (training, full tables,
  benchmarks), servers, and commands that need hardware or data a test machine has not;
* ```` ```text ````, ```` ```yaml ````, ```` ```json ```` — not code.

A block with no info string, or ``bash``/``sh``/``shell``, fails the test: every shell block is either run
or marked ``not-run``.

The scratch folder of each file holds tiny inputs (``loop.mp4``, ``loop.dcm``, ``frames/``, ``first.png``,
``data/`` a simulated data set) and ``NEEDLETRACK_WEIGHTS_DIR`` points at a folder whose ``default`` is an
untrained ``stnan_tiny``, so ``--model default`` and ``Tracker.from_pretrained("default")`` run in a fraction
of a second. Blocks of one file run in order and share the folder.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every page is covered (the set is kept for pages that may need leaving out, with a reason)
NOT_OURS: set = set()
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
RUN_KINDS = {"python", "console"}
SHOWN_KINDS = {"text", "yaml", "json", "csv", "xml", "ini", "toml", "html", "javascript", "js"}


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    return [f for f in files if f.name not in NOT_OURS and not re.match(r"table\d_", f.name)]


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line, info string, body) of every fenced block."""
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out.append((line, m.group(1).strip(), m.group(2)))
    return out


def console_commands(body: str) -> list[str]:
    cmds, cur = [], None
    for raw in body.splitlines():
        if cur is not None:                       # a continued command
            cur += " " + raw.strip().rstrip("\\").strip()
            if not raw.rstrip().endswith("\\"):
                cmds.append(cur)
                cur = None
            continue
        if raw.startswith("$ "):
            c = raw[2:]
            if c.rstrip().endswith("\\"):
                cur = c.rstrip().rstrip("\\").strip()
            else:
                cmds.append(c.strip())
    if cur is not None:
        cmds.append(cur)
    return cmds


def test_every_block_is_classified():
    bad = []
    for f in doc_files():
        for line, info, body in blocks(f):
            kind = info.split()[0] if info else ""
            if kind in RUN_KINDS or kind in SHOWN_KINDS:
                if kind == "console" and "not-run" not in info and not console_commands(body):
                    bad.append(f"{f.name}:{line}: a runnable console block with no '$ ' command")
                continue
            bad.append(f"{f.name}:{line}: fence '{info}' is neither python, console nor text (add 'not-run' "
                       "to show a command without running it)")
    assert not bad, "\n".join(bad)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text and "docs/design.md" in text
    for f in doc_files():                          # links between the docs resolve
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", f.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (f.parent / target).exists(), f"{f.name}: broken link {target}"


def test_no_reference_to_the_outside_design_file():
    hits = []
    for f in doc_files():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "DESIGN §" in line or "DESIGN.md" in line:
                hits.append(f"{f.name}:{i}")
    assert not hits, hits


# ------------------------------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import torch

    from needletrack.models import build_model, save_model

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_model(build_model("stnan_tiny"), d / "default.safetensors")
    return d


def make_inputs(d: Path) -> None:
    """The tiny inputs the docs' examples name."""
    import numpy as np

    from needletrack.data.folder import SequenceWriter
    from needletrack.geometry import line_mask
    from needletrack.io import samples as S
    from needletrack.io import write_mask
    from needletrack.sim import simulate_sequence

    S.write_mp4(d / "loop.mp4", n=6, h=48, w=64)
    S.write_dicom(d / "loop.dcm", "ybr_jpeg", n=6, h=48, w=64)
    frames = S.sample_frames(6, 48, 64)
    import cv2

    (d / "frames").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / "frames" / f"{i:05d}.png"), f)
    write_mask(d / "first.png", line_mask((48, 64), (2, 8), (40, 30), 3))
    for s in range(2):                                       # data/: a tiny simulated data set
        with SequenceWriter(d / "data", f"seq{s}", {"fps": 25, "pixel_spacing_mm": [0.2, 0.2]}) as w:
            for frame, mask, needle in simulate_sequence(4, 64, "clinical", 3 + s):
                w.add(frame, mask, needle)
    np.save(d / "frame.npy", frames[0])


def run_block(kind: str, body: str, cwd: Path, env: dict, where: str) -> None:
    if kind == "python":
        old = os.getcwd()
        os.chdir(cwd)
        try:
            exec(compile(body, where, "exec"), {"__name__": "__docs__"})
        finally:
            os.chdir(old)
        return
    from needletrack.cli import main

    for cmd in console_commands(body):
        argv = shlex.split(cmd, comments=True)
        if argv and argv[0] == "needletrack" and not any(c in cmd for c in "|;&>"):
            old = os.getcwd()
            os.chdir(cwd)
            try:
                rc = main([a for a in argv[1:]])
            finally:
                os.chdir(old)
            assert rc == 0, f"{where}: `{cmd}` exited {rc}"
        else:
            r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"{where}: `{cmd}` exited {r.returncode}: {r.stderr[-2000:]}"


@pytest.mark.parametrize("name", [f.name for f in doc_files()])
def test_runnable_blocks_run(name, tmp_path, tiny_weights, monkeypatch):
    f = ROOT / name if name == "README.md" else ROOT / "docs" / name
    todo = [(line, info.split()[0], body) for line, info, body in blocks(f)
            if info and info.split()[0] in RUN_KINDS and "not-run" not in info]
    if not todo:
        return
    make_inputs(tmp_path)
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NEEDLETRACK_THREADS", "1")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for line, kind, body in todo:
        run_block(kind, body, tmp_path, env, f"{name}:{line}")
