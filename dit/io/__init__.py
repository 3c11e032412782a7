"""Files in and out.

    atomic.py       atomic writes (temporary name, then rename)
    checkpoint.py   read every kind of checkpoint into a network; write our safetensors export
    zoo.py          the model zoo manifest (models/manifest.json), downloads with sha256 checks
    diffusers.py    convert to and from diffusers' DiTTransformer2DModel / DiTPipeline
    images.py       image grids and PNG files
"""
