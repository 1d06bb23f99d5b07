"""The old name of :mod:`needletrack.track.cine_to_folder` (a cine tracked into an output folder); kept only
because serve/ and tests/ still import it from here. New code imports ``needletrack.track.cine_to_folder``."""
from needletrack.track.cine_to_folder import (SPACING_SOURCES, format_summary, parse_line,  # noqa: F401
                                              read_first_mask, spacing_source, track_to_folder)
