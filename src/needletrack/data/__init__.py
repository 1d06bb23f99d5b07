"""needletrack.data."""
