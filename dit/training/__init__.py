"""Training: everything train.py wires together.

    config.py     TrainConfig (the common fields), the named presets, the CPU defaults' precedence
    sections.py   every training field in one table: the common ones and each architecture's and process's
                  section; the refusal of another system's settings
    flags.py      the training scripts' command line, generated from that table
    data.py       the data: images, clips or a latent cache, the autoencoder, buckets, the network config
    setup.py      the accelerator, an image DiT's weights for a video network, the checkpoint to resume
    step.py       a micro-batch to a loss through the process; the learning-rate schedule
    monitor.py    running metrics, the non-finite guard's counters, SIGTERM, logging
    guard.py      non-finite steps skipped on the device without a host sync
    parallel.py   DDP (replicated) or FSDP2 (sharded) training, with the EMA
    ema.py        the exponential moving average of the weights
    state.py      atomic training checkpoints, pruning, resume
    preview.py    sample grids during and after training
    run_log.py    metrics.jsonl and wandb
"""
