"""Files in and out.

    atomic.py       atomic writes (temporary name, then rename)
    checkpoint.py   read every kind of checkpoint into a network; write our safetensors export
    zoo.py          the model zoo manifest (models/manifest.json), downloads with sha256 checks
    diffusers.py    convert weights and config to and from diffusers' DiTTransformer2DModel
    diffusers_pipeline.py   write a diffusers DiTPipeline; read a pipeline's scheduler, VAE and image size
    images.py       image grids and PNG files
    shards.py       evaluation batches: shards that record what drew them, the .npz assembled from them
"""
