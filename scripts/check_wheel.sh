#!/usr/bin/env bash
# CI: build the wheel from the tree, install it into a fresh temporary venv, run a short demo from a folder
# outside the repository. Proves that a non-editable install carries what it needs (the default weights,
# the configs, the web page's files, splits.json) and finds them without the repository.
#
#   scripts/check_wheel.sh                      # quick (~15 s), after `make venv` / `make test` (uses .venv)
#   CHECK_WHEEL_FULL=1 scripts/check_wheel.sh   # what CI runs (~1-2 min): the dependencies installed too
#
# Dependencies: by default the temporary venv gets the wheel with --no-deps and reads the dependencies
# (torch, onnxruntime, ...) from .venv's site-packages through a one-line .pth file. That keeps the check
# under a minute and offline. It is not `--system-site-packages` (which would expose the base interpreter,
# not .venv), and a plain path in a .pth file does not run .venv's own .pth files, so .venv's editable
# `needletrack` (which points at src/) stays invisible: the script checks that `needletrack` is imported
# from the temporary venv. With CHECK_WHEEL_FULL=1 pip resolves the wheel's declared dependencies instead
# (torch first with scripts/install_torch.py, so the CPU build): slower, and it needs an index.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
FRAMES=${CHECK_WHEEL_FRAMES:-12}
[ -x "$PYTHON" ] || { echo "check_wheel: $PYTHON not found (run make venv first)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/needletrack-wheel.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
t0=$(date +%s)

# 1. a clean copy of the tree (tracked and new, not ignored files: what a fresh clone would hold), so a stale
#    build/ folder or an untracked weights file cannot leak into the wheel
echo "check_wheel: copying the tree ..."
mkdir -p "$TMP/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf - | tar -xf - -C "$TMP/src"
else
  tar --exclude=./.venv --exclude=./build --exclude=./dist -cf - . | tar -xf - -C "$TMP/src"
fi

# 2. the wheel (no build isolation when .venv has setuptools and wheel: no index needed)
echo "check_wheel: building the wheel ..."
iso=()
"$PYTHON" -c "import setuptools, wheel" 2>/dev/null && iso=(--no-build-isolation)
"$PYTHON" -m pip wheel -q --no-deps "${iso[@]}" "$TMP/src" -w "$TMP/dist"
WHEEL=$(ls "$TMP"/dist/*.whl)
echo "check_wheel: built $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"
for f in needletrack/_data/weights/default.safetensors needletrack/_data/weights/detector.safetensors \
         needletrack/_data/configs/tables/quick.yaml \
         needletrack/_data/configs/models/stnan.yaml needletrack/serve/static/index.html needletrack/data/splits.json; do
  "$PYTHON" - "$WHEEL" "$f" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
if sys.argv[2] not in names:
    sys.exit(f"check_wheel: the wheel lacks {sys.argv[2]}")
extra = sorted(n for n in names if n.startswith("needletrack/_data/weights/")
               and not n.endswith(("/default.safetensors", "/detector.safetensors")))
if extra:
    sys.exit(f"check_wheel: the wheel carries weights it should not: {extra}")
PY
done

# 3. a fresh venv with the wheel
echo "check_wheel: installing it into a temporary venv ..."
BASE=$("$PYTHON" -c "import sys; print(sys._base_executable)")
"$BASE" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
if [ "${CHECK_WHEEL_FULL:-0}" = 1 ]; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" "$REPO/scripts/install_torch.py"
  "$VPY" -m pip install "$WHEEL"
else
  "$VPY" -m pip install -q --no-deps "$WHEEL"
  DEPS=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  SITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$DEPS" > "$SITE/zz_needletrack_check_deps.pth"
fi

# 4. the demo, from a folder outside the repository, with a clean environment (no weights/cache overrides)
mkdir -p "$TMP/work" "$TMP/home"
cd "$TMP/work"
run() { env -u NEEDLETRACK_WEIGHTS_DIR -u NEEDLETRACK_CACHE_DIR -u PYTHONPATH HOME="$TMP/home" \
        XDG_CACHE_HOME="$TMP/home/.cache" "$@"; }
run "$VPY" - "$TMP/venv" <<'PY'
import sys
from pathlib import Path

import needletrack
from needletrack.models.weights import weights_dir
from needletrack.eval.tables import CONFIG_DIR

venv = Path(sys.argv[1]).resolve()
where = Path(needletrack.__file__).resolve()
assert venv in where.parents, f"needletrack imported from {where}, not from the wheel in {venv}"
assert (weights_dir() / "default.safetensors").is_file(), weights_dir()
assert (weights_dir() / "detector.safetensors").is_file(), weights_dir()
assert (CONFIG_DIR / "quick.yaml").is_file(), CONFIG_DIR
print(f"check_wheel: needletrack from {where.parent}; weights {weights_dir()}; tables configs {CONFIG_DIR}")
PY
echo "check_wheel: needletrack demo --frames $FRAMES (in $TMP/work) ..."
run "$TMP/venv/bin/needletrack" demo --frames "$FRAMES" --quiet 2>&1 | tee "$TMP/demo.log"
grep -q "WARNING" "$TMP/demo.log" && { echo "check_wheel: the demo warned (shipped weights missing?)" >&2; exit 1; }
grep -q "tracked with default" "$TMP/demo.log" || { echo "check_wheel: the demo did not use the shipped model" >&2; exit 1; }
[ -s needletrack-demo/overlay.mp4 ] && [ -s needletrack-demo/summary.json ] \
  || { echo "check_wheel: the demo wrote no overlay/summary" >&2; exit 1; }
# the ONNX export of the shipped weights goes to the user's cache, not into site-packages
if find "$TMP/venv" -name .onnx | grep -q .; then echo "check_wheel: an ONNX cache was written into the venv" >&2; exit 1; fi
if grep -q "engine onnx" "$TMP/demo.log" && ! [ -d "$TMP/home/.cache/needletrack/onnx" ]; then
  echo "check_wheel: the ONNX export is not in the user's cache" >&2; exit 1; fi
echo "check_wheel: OK ($(( $(date +%s) - t0 )) s)"
