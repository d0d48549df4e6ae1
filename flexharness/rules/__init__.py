"""Pure rules: aggregation, gates, baselines, metrics and statistics.

Plain functions over plain data: no pytest, no torch, so every rule can be
checked with hypothesis and reused by ``flexharness merge``.
"""
