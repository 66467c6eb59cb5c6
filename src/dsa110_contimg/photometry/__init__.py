"""Photometry: forced fluxes at catalog positions, normalized epoch by epoch."""
