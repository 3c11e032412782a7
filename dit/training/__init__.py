"""Training: everything train.py wires together.

    config.py     TrainConfig (every field a flag) and the named presets
    setup.py      the accelerator, the data and network config, the checkpoint to resume
    step.py       a micro-batch to a loss through the process; the learning-rate schedule
    monitor.py    running metrics, the non-finite guard's counters, SIGTERM, logging
    guard.py      non-finite steps skipped on the device without a host sync
    parallel.py   DDP (replicated) or FSDP2 (sharded) training, with the EMA
    ema.py        the exponential moving average of the weights
    state.py      atomic training checkpoints, pruning, resume
    preview.py    sample grids during and after training
    tracking.py   metrics.jsonl and wandb
"""
