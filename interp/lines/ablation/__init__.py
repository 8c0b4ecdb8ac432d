"""Ablation line: `ablation-kl` and `ablation-effect` (metrics.py), over the engine's sweep and attribution."""
