"""Training: the contrastive trainer and what it needs (its config, data split, batches, image cache,
loss, optimiser, tower locking, WiSE-FT, several processes, the run's config.yaml). The top of the
library: imports evaluation, inference, models, data and the shared modules."""
