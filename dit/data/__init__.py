"""Data: what training reads, and the per-sample stream that makes runs reproducible.

    shapes.py         the built-in procedural dataset (ten coloured shapes, no download)
    folders.py        ImageNet-style class folders with the ADM centre crop
    latent_cache.py   a dataset encoded once through the VAE (posterior mean and std, image and flip)
    shapes_video.py   the same shapes in motion, with ground truth (direction, speed, centroids, masks)
    video_folders.py  class folders of clips (frame folders or video files)
    video_masks.py    VDT's training masks: which positions of a clip are given
    joint.py          joint image-video training (Latte+IMG): same-class frames ride along each clip
    stream.py         which sample each process sees at each step, and all its randomness
"""
