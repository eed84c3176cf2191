"""The training engine: epochs, checkpoints, resume, distributed data parallel."""
