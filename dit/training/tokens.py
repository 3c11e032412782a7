"""train.py, before its config is checked: what a VQ tokenizer as --vae implies (token ids, VQ-Diffusion)."""

from __future__ import annotations

from dit.autoencoders import peek_autoencoder
from dit.errors import UserError
from dit.layout import TOKENS
from dit.networks import TOKENIZER, get_architecture, role_of
from dit.training.config import VQ_TOKENIZER_CPU, field_default


def resolve_tokens(values: dict) -> dict:
    """train.py, before its config is checked: what a VQ tokenizer as --vae implies (token ids, VQ-Diffusion).

    `values` are the merged preset, recipe and flags. A tokenizer --vae needs --arch token-dit and a
    process of token ids (vq-diffusion), and either of those needs a tokenizer --vae; the tokenizer's
    K fills --codebook-size (the process is built with it when the config is checked), and a
    --codebook-size that disagrees is refused. Reads the tokenizer file's header only."""
    from dit.processes import get_process

    get = lambda k: values.get(k, field_default(k))  # noqa: E731 - a field's value or its default
    arch, process, vae = get("arch"), get("process"), get("vae")
    if role_of(arch) == TOKENIZER:
        raise UserError(f"--arch {arch} trains a VQ tokenizer: use train_vq.py (then pass its run as --vae here)")
    K = peek_autoencoder(vae).get("codebook_size")  # a tokenizer's, from its file's header
    arch_tokens = get_architecture(arch).data_kind == TOKENS
    process_tokens = get_process(process).data_kind == TOKENS
    if K is None:
        if arch_tokens or process_tokens:
            what = f"--arch {arch}" if arch_tokens else f"--process {process}"
            hint = f" (train it first: `python train_vq.py` writes {vae})" if vae == VQ_TOKENIZER_CPU else ""
            raise UserError(f"{what} models token ids: --vae must be a VQ tokenizer (a train_vq.py run directory, "
                            f"checkpoint or export), and {vae!r} is not one{hint}")
        return values
    if not arch_tokens:
        raise UserError(f"--vae {vae} is a VQ tokenizer (token ids), which --arch {arch} does not model: use --arch "
                        "token-dit --process vq-diffusion (preset vq-diffusion-cpu)")
    if not process_tokens:
        raise UserError(f"--vae {vae} is a VQ tokenizer (token ids), which the {process} process does not model: use "
                        "--process vq-diffusion")
    given = get("codebook_size")
    if given and given != K:
        raise UserError(f"--codebook-size {given}, but the tokenizer {vae} has K = {K} codes; drop --codebook-size "
                        "(it is read from the tokenizer)")
    if get("latent_norm") != "scalar":
        raise UserError(f"--latent-norm {get('latent_norm')}: token ids take no normalisation; use --latent-norm scalar")
    return {**values, "codebook_size": K}
