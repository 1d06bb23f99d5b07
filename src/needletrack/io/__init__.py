"""needletrack.io."""
