"""Variability: light-curve statistics, ESE detection, alerts and the candidates page."""
