"""Seeds of the sequences of a simulated data set (written by :func:`needletrack.data.simulated.write_dataset`)."""
from __future__ import annotations

import numpy as np


def sequence_seed(seed: int, index: int) -> int:
    """Seed of sequence ``index`` in a data set generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])
