"""Simulation: a raw archive, RFI, light curves and test images with known truth."""
