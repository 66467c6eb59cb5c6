"""Calibration: solve bandpass and gains on calibrator groups, select and apply them."""
