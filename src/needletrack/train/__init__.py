"""needletrack.train."""
