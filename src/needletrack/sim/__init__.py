"""needletrack.sim."""
