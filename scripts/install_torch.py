#!/usr/bin/env python3
"""Install the CPU build of torch into the running Python (the Makefile runs it with the venv's python).

    .venv/bin/python scripts/install_torch.py [torch==2.13.0] [--dry-run]

On Linux, ``pip install torch`` from the default index (PyPI) is the CUDA build: cuda-toolkit, cuDNN, cuBLAS,
NCCL and triton, several GB. needletrack runs on the CPU, so this script picks, in order:

1. nothing to do: the pinned torch is already installed here;
2. PyTorch's CPU wheel index (``https://download.pytorch.org/whl/cpu``, or
   ``$NEEDLETRACK_TORCH_INDEX``), when it answers within a few seconds (a refused connection or an unknown
   host fails over at once): ``pip install torch==X --index-url <cpu index>`` (about 200 MB);
3. a CPU torch wheel that pip is configured to see on a local disk (``find-links`` / ``index-url`` /
   ``extra-index-url`` in pip's config or ``PIP_*`` environment variables pointing to local folders);
4. on macOS and Windows the default index (its torch has no CUDA), or anywhere when
   ``NEEDLETRACK_ALLOW_CUDA_TORCH=1`` says the default (possibly CUDA) build is wanted;
5. otherwise stop with a message that says how to get the CPU build, rather than downloading GBs of CUDA.

Environment: ``NEEDLETRACK_TORCH_INDEX`` (the CPU index URL), ``NEEDLETRACK_TORCH_PROBE_TIMEOUT`` (seconds,
default 3), ``NEEDLETRACK_ALLOW_CUDA_TORCH=1``. Standard library only: it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PIN = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT = 3.0
CPU_WHEEL_MB = 200          # the Linux x86-64 CPU wheel of torch 2.x, about 180-200 MB
DEPS_MB = 15                # sympy, networkx, jinja2, fsspec, filelock, ...


@dataclass
class Plan:
    kind: str                                   # installed | cpu-index | local-wheel | default-index | refuse
    message: str
    pip_args: list[str] = field(default_factory=list)   # after `python -m pip`
    probe_error: str | None = None


# ------------------------------------------------------------------------------------------------ checks
def pinned_version(pin: str) -> str:
    m = re.fullmatch(r"\s*torch\s*==\s*([0-9][0-9A-Za-z.]*)\s*", pin)
    if not m:
        raise SystemExit(f"install_torch: expected a pin like torch==2.13.0, got {pin!r}")
    return m.group(1)


def installed_torch_version() -> str | None:
    """The torch version installed in this interpreter (without importing torch: that takes seconds)."""
    import importlib.metadata
    import importlib.util

    try:
        if importlib.util.find_spec("torch") is None:
            return None
        return importlib.metadata.version("torch")
    except (importlib.metadata.PackageNotFoundError, ValueError, ImportError):
        return None


def same_release(installed: str | None, wanted: str) -> bool:
    return installed is not None and installed.split("+", 1)[0] == wanted


def probe_index(url: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str | None]:
    """(reachable, why not): does ``<url>/torch/`` answer with a package page within ``timeout`` seconds?

    The whole probe (name lookup, connect, first bytes) is bounded by ``timeout``: it runs in a daemon thread
    that is abandoned if it takes longer. A refused connection or an unknown host returns at once.
    """
    page = url.rstrip("/") + "/torch/"
    result: dict = {}

    def work():
        try:
            req = urllib.request.Request(page, headers={"User-Agent": "needletrack-install-torch"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                head = r.read(65536).decode("utf-8", "replace")
                result["ok"] = r.status == 200 and "torch-" in head
                if not result["ok"]:
                    result["why"] = f"{page} answered {r.status} without torch wheels"
        except urllib.error.HTTPError as e:
            result["ok"], result["why"] = False, f"{page} answered HTTP {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            result["ok"], result["why"] = False, f"{page}: {reason}"

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, f"{page}: no answer within {timeout:g} s"
    return bool(result.get("ok")), result.get("why")


def pip_config_locations(env: dict | None = None) -> list[str]:
    """Every find-links / index-url / extra-index-url that pip is configured with (config files and PIP_*)."""
    env = os.environ if env is None else env
    values: list[str] = []
    for var in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        values += env.get(var, "").split()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, **env}).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, val = line.partition("=")
        if key.split(".")[-1] in ("find-links", "index-url", "extra-index-url"):
            values += val.strip().strip("'\"").split()
    seen, unique = set(), []
    for v in values:
        if v and v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


def local_dir(location: str) -> Path | None:
    """A local folder for a pip location (a plain path or a file:// URL), else None."""
    if location.startswith("file:"):
        p = Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    elif "://" in location:
        return None
    else:
        p = Path(location).expanduser()
    return p if p.is_dir() else None


def is_cpu_wheel(wheel: Path) -> bool:
    """A '+cpu' build, or a wheel whose metadata requires no nvidia-* packages."""
    if "+cpu" in wheel.name:
        return True
    try:
        with zipfile.ZipFile(wheel) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                return False
            text = z.read(meta).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile):
        return False
    return not re.search(r"^Requires-Dist:\s*nvidia-", text, re.M | re.I)


def wheel_fits(wheel: Path) -> bool:
    """Is this wheel installable by the running interpreter (python tag, ABI, platform)?"""
    try:
        from pip._internal.models.wheel import Wheel
        from pip._internal.utils.compatibility_tags import get_supported

        return Wheel(wheel.name).supported(get_supported())
    except Exception:  # noqa: BLE001 - pip internals moved: accept, pip itself will refuse a misfit
        return True


def find_local_cpu_wheel(version: str, locations: list[str]) -> Path | None:
    """A CPU wheel of torch ``version`` in a local find-links folder or local simple index."""
    pat = re.compile(rf"^torch-{re.escape(version)}(\+[A-Za-z0-9.]+)?-.*\.whl$")
    for loc in locations:
        d = local_dir(loc)
        if d is None:
            continue
        for folder in (d, d / "torch"):          # find-links folder, or a simple index's project folder
            if not folder.is_dir():
                continue
            for w in sorted(folder.iterdir()):
                if pat.match(w.name) and w.is_file() and wheel_fits(w) and is_cpu_wheel(w):
                    return w
    return None


# ---------------------------------------------------------------------------------------------- decision
def decide(pin: str = DEFAULT_PIN, *, index_url: str | None = None, timeout: float | None = None,
           allow_cuda: bool | None = None, platform: str | None = None, installed: str | None = "auto",
           locations: list[str] | None = None) -> Plan:
    """What to do to get ``pin``'s CPU build into this interpreter (no side effects besides the probe).

    Every argument defaults to this machine (environment variables, ``sys.platform``, pip's config); tests
    pass them explicitly.
    """
    version = pinned_version(pin)
    if index_url is None:
        index_url = os.environ.get("NEEDLETRACK_TORCH_INDEX") or CPU_INDEX
    if timeout is None:
        timeout = float(os.environ.get("NEEDLETRACK_TORCH_PROBE_TIMEOUT") or PROBE_TIMEOUT)
    if allow_cuda is None:
        allow_cuda = os.environ.get("NEEDLETRACK_ALLOW_CUDA_TORCH", "") == "1"
    platform = sys.platform if platform is None else platform
    if installed == "auto":
        installed = installed_torch_version()

    if same_release(installed, version):
        return Plan("installed", f"torch {installed} is already installed here: nothing to do")

    ok, why = probe_index(index_url, timeout)
    if ok:
        return Plan("cpu-index",
                    f"installing {pin} (CPU build) from {index_url}: about {CPU_WHEEL_MB} MB for the torch "
                    f"wheel plus ~{DEPS_MB} MB of dependencies",
                    ["install", pin, "--index-url", index_url])

    wheel = find_local_cpu_wheel(version, pip_config_locations() if locations is None else locations)
    if wheel is not None:
        mb = wheel.stat().st_size / 1e6
        return Plan("local-wheel",
                    f"{index_url} is not reachable ({why}); installing the local CPU wheel {wheel} "
                    f"({mb:.0f} MB on disk, no download; dependencies from pip's configured indexes)",
                    ["install", str(wheel)], probe_error=why)

    if platform != "linux" or allow_cuda:
        what = ("the default index's build (CUDA on Linux: several GB)" if platform == "linux"
                else f"the default index's build (CPU-only on {platform}, about {CPU_WHEEL_MB} MB)")
        return Plan("default-index", f"{index_url} is not reachable ({why}); installing {pin} from {what}",
                    ["install", pin], probe_error=why)

    return Plan("refuse", refuse_message(pin, index_url, why), probe_error=why)


def refuse_message(pin: str, index_url: str, why: str | None) -> str:
    return (f"install_torch: cannot get the CPU build of {pin}.\n"
            f"  PyTorch's CPU wheel index is not reachable: {why}\n"
            f"  and pip is not configured with a local CPU torch wheel.\n"
            f"  The default index (PyPI) would install the CUDA build on Linux: several GB that needletrack does\n"
            f"  not use. Any one of these fixes it:\n"
            f"    - allow access to {CPU_INDEX} (or a mirror of it: NEEDLETRACK_TORCH_INDEX=<url>) and re-run make;\n"
            f"    - download a CPU wheel (e.g. torch-{pinned_version(pin)}+cpu-...whl) on a machine that reaches it,\n"
            f"      then: .venv/bin/python -m pip install <that wheel>   and re-run make;\n"
            f"    - or accept the default (CUDA) build: NEEDLETRACK_ALLOW_CUDA_TORCH=1 make ...")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pin", nargs="?", default=DEFAULT_PIN, help=f"torch pin (default {DEFAULT_PIN})")
    ap.add_argument("--dry-run", action="store_true", help="say what would be done, install nothing")
    args = ap.parse_args(argv)

    print(f"install_torch: looking for the CPU build of {args.pin} ...", flush=True)
    plan = decide(args.pin)
    if plan.kind == "refuse":
        print(plan.message, file=sys.stderr)
        return 1
    print(f"install_torch: {plan.message}", flush=True)
    if plan.kind == "installed" or args.dry_run:
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "on", *plan.pip_args[1:]]
    print("install_torch: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"install_torch: pip failed (exit {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
