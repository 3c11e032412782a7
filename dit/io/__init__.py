"""Files and formats, below the autoencoders: what is on disk and how to read and write it.

    atomic.py       atomic writes (temporary name, then rename)
    checkpoint.py   read every kind of checkpoint into a network; write our safetensors export; the one
                    reader of an export's header (`read_export_header`), which the VQ tokenizer uses too
    zoo.py          the model zoo manifest (models/manifest.json), downloads with sha256 checks
    diffusers_transformer.py  weights and config to and from diffusers' DiTTransformer2DModel
    diffusers_pipeline.py     what a diffusers DiTPipeline directory says: scheduler betas, VAE, image size
    images.py       image grids and PNG files
    video.py        clip arrays (.npz), GIF and MP4 grids, any samples as a grid file, reading video files
    shards.py       evaluation batches: shards that record what drew them, the .npz assembled from them

Nothing here samples or drives a network: the pipelines (dit/pipelines/) do.
"""
