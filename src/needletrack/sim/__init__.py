"""Ultrasound needle-insertion simulator: B-mode physics, breast anatomy or real backgrounds,
a calibrated needle, motion at 25 fps and exact ground truth. (A simulated data set folder is written by
:func:`needletrack.data.simulated.write_dataset`.)

    from needletrack.sim import simulate_sequence, preset, load_backgrounds
    for frame, mask, needle in simulate_sequence(50, size=448, preset="clinical", seed=3):
        ...
"""
from __future__ import annotations

from needletrack.sim.backgrounds import load_backgrounds
from needletrack.sim.config import PRESETS, SimConfig, preset
from needletrack.sim.dataset import sequence_seed
from needletrack.sim.engine import SequenceSimulator, simulate_sequence
from needletrack.sim.metrics import needle_cnr

__all__ = ["PRESETS", "SimConfig", "preset", "simulate_sequence", "SequenceSimulator",
           "load_backgrounds", "needle_cnr", "sequence_seed"]
