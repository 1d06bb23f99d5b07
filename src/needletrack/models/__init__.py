"""needletrack.models."""
