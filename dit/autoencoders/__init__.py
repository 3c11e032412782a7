"""Autoencoders between pixels and what the network models.

    pixels.py   the pixel convention ([-1, 1] float NCHW inside, uint8 NHWC outside)
    vae.py      the Stable Diffusion VAE (diffusers AutoencoderKL, scale 0.18215) or pixel space
    vq.py       a trained VQ tokenizer (train_vq.py) between pixels and token ids (kind "tokens")
"""
