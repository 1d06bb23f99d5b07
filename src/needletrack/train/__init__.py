"""needletrack.train: the training pipeline.

- ``rollout``: the training rollout (memory written with each prediction) and streaming validation tracking
- ``losses``: BCE, bootstrapped BCE, Dice
- ``config``: the YAML training config (defaults, validation, LR schedule)
- ``loop``: ``train(config, out_dir, resume=...)`` behind ``needletrack train`` (DDP under torchrun)
- ``validation``: the fixed validation split and its metrics (docs/design.md §5)
- ``distributed``: torchrun / DistributedDataParallel helpers
- ``toy``: a trivially learnable toy data set for tests and smoke runs

Submodules import torch; this package's import does not.
"""
