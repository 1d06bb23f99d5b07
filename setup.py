"""Build hook: copy the shipped configs, default weights and detector into the wheel as package data.

The repository's ``configs/`` and ``weights/`` stay the source of truth (the code reads them there in a
source checkout, see ``src/needletrack/resources.py``); a wheel gets copies under ``needletrack/_data/``.
Only ``weights/default.safetensors`` (the tracking model) and ``weights/detector.safetensors`` (the learned
single-frame detector) ship, not the other weights files. Everything else is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = (("configs", "**/*.yaml"), ("weights", "default.safetensors"),
           ("weights", "detector.safetensors"))   # (folder, glob); see MANIFEST.in


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):       # an editable install reads the repository folders
            return
        for folder, pattern in SHIPPED:
            files = sorted(p for p in (ROOT / folder).glob(pattern) if p.is_file())
            if not files:
                raise SystemExit(f"setup.py: nothing matches {folder}/{pattern}: cannot ship it")
            for src in files:
                dst = Path(self.build_lib, "needletrack", "_data", src.relative_to(ROOT))
                self.mkpath(str(dst.parent))
                self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithData})
