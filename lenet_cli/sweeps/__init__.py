"""Sweeps: launch helpers run around every job, and the summary Hydra callback."""
