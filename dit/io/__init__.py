"""Files in and out.

    atomic.py       atomic writes (temporary name, then rename)
    checkpoint.py   read every kind of checkpoint into a network; write our safetensors export
    zoo.py          the model zoo manifest (models/manifest.json), downloads with sha256 checks
    diffusers.py    convert weights and config to and from diffusers' DiTTransformer2DModel
    diffusers_pipeline.py   write a diffusers DiTPipeline; read a pipeline's scheduler, VAE and image size
    images.py       image grids and PNG files
    video.py        clip arrays (.npz), GIF and MP4 grids, any samples as a grid file, reading video files
    vq_pipeline.py  a diffusers VQ-Diffusion text-to-image pipeline read into our process and sampler
    prompts.py      sample.py --prompt: that pipeline's flags checked, images sampled and written
    shards.py       evaluation batches: shards that record what drew them, the .npz assembled from them
"""
