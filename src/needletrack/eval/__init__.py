"""needletrack.eval."""
