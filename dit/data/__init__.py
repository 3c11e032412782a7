"""Data: what training reads, and the per-sample stream that makes runs reproducible.

    shapes.py         the built-in procedural dataset (ten coloured shapes, no download)
    folders.py        ImageNet-style class folders (or a flat folder) with the ADM centre crop
    hf.py             Hugging Face datasets (imagefolder with metadata.jsonl, save_to_disk, parquet, hub ids)
    webdataset.py     WebDataset tar shards of images, read by random access
    sources.py        any of those three as the stream's images, at one size or in aspect-ratio buckets
    buckets.py        aspect-ratio buckets: sizes, each image's bucket, batches of one bucket
    latent_cache.py   a dataset encoded once through the VAE (posterior mean and std, image and flip)
    cache_writer.py   writing one, from any source of images, chunk by chunk over processes
    latent_shards.py  its chunks as WebDataset tar shards (cache_latents.py --out-format webdataset)
    shapes_video.py   the same shapes in motion, with ground truth (direction, speed, centroids, masks)
    video_folders.py  class folders of clips (frame folders or video files)
    video_masks.py    VDT's training masks: which positions of a clip are given
    joint.py          joint image-video training (Latte+IMG): same-class frames ride along each clip
    stream.py         which sample each process sees at each step, and all its randomness
"""
