"""Models: the two-tower network, its towers and heads, checkpoints, the built-in model, imported
pretrained CLIPs, and `resolve`, the one place that decides what a `--model` name means.
Imports data and the shared modules (run_folder, to find a run's checkpoint)."""
