"""needletrack.train: the training pipeline.

- ``loop``: ``train(config, out_dir, resume=...)`` behind ``needletrack train`` (DDP under torchrun); it runs
  the pieces below in order
- ``config``: ``TrainConfig``, the typed YAML training config (defaults, checks, LR schedule)
- ``data_loader``: the clip sources, the ``ClipDataset`` and the DataLoader (step k's batch fixed by seed, k, rank)
- ``model_setup``: device, model, optimiser, frozen BatchNorm, the weight average, the DDP wrapper
- ``step``: one optimiser step and the training log's running means
- ``rollout``: the training rollout (the first mask, then each prediction, written to memory)
- ``losses``: BCE, bootstrapped BCE, Dice
- ``checkpoint``: the checkpoint and exact resume (model, optimiser, RNG states, logs)
- ``validation``: the fixed validation split, tracked with the shipped ``Tracker`` (docs/design.md §5)
- ``logs``: train/val CSV logs, the validation curve, summary.json
- ``distributed``: torchrun / DistributedDataParallel helpers
- ``table_rows``: training the rows of the paper's tables (``needletrack tables``)

Submodules import torch; this package's import does not.
"""
