"""needletrack.models.baselines."""
