"""needletrack.track: the streaming tracker, its bounded memory store, needle geometry smoothing and auto-init.

Importing this package does not import torch; engines import it when built.
"""
from needletrack.track.autoinit import detect_needle, find_needle_line
from needletrack.track.engine import Letterbox, TorchEngine, make_engine
from needletrack.track.kalman import TipTailKalman
from needletrack.track.memory import MemoryStore
from needletrack.track.tracker import CSV_HEADER, Tracker, TrackResult, predicted_path

__all__ = ["Tracker", "TrackResult", "MemoryStore", "TipTailKalman", "TorchEngine", "Letterbox", "make_engine",
           "detect_needle", "find_needle_line", "predicted_path", "CSV_HEADER"]
