"""Scoring trained networks: the evaluator, its reports and figures, the translation probe."""
