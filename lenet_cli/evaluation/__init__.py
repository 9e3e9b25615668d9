"""Scoring trained networks: lenet-eval's reports and figures, the translation probe."""
