"""needletrack.track."""
