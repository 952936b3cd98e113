"""Training denoisers: datasets, the training loop with EMA, checkpoints."""
