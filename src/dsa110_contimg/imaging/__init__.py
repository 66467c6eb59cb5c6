"""Imaging: one image per calibrated group, after subtracting the sources drifting through."""
