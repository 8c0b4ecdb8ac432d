"""What every layer shares: head labels, errors, validated configs, HeadScores, provenance, crash-safe files,
progress, prompt sets and the metric registry. Imports nothing above it (no torch model code, no transformers)."""
