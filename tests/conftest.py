import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one torch thread (on a shared, oversubscribed CPU two OpenMP threads make the tiny
    models up to ~20x slower), and a test that changes it (a CLI ``--threads``) does not leak into the next."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def backgrounds_dir() -> Path:
    d = SHARED_DATA / "us_backgrounds"
    if not (d / "images").is_dir():
        pytest.skip("real ultrasound backgrounds (../shared/data/us_backgrounds) not present")
    return d


@pytest.fixture
def needle_visibility_csv() -> Path:
    p = SHARED_DATA / "needle_visibility" / "needle_cnr_vs_angle.csv"
    if not p.exists():
        pytest.skip("needle visibility data (../shared/data/needle_visibility) not present")
    return p
