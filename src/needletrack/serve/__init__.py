"""needletrack.serve."""
