"""Data: what training reads, and the per-sample stream that makes runs reproducible.

    shapes.py         the built-in procedural dataset (ten coloured shapes, no download)
    folders.py        ImageNet-style class folders with the ADM centre crop
    latent_cache.py   a dataset encoded once through the VAE (posterior mean and std, image and flip)
    stream.py         which sample each process sees at each step, and all its randomness
"""
