"""flexharness: a pytest plugin that measures how flexible a pretrained model is.

Fine-tune on many tasks, on many domains and under compression; aggregate the
scores per axis into P_avg and σ_P; gate on thresholds. See README.md.
"""
