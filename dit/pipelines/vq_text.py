"""diffusers' text-to-image VQ-Diffusion pipelines (VQDiffusionPipeline, e.g. microsoft/vq-diffusion-ithq),
read into our pieces and sampled with our process and sampler (`sample.py --ckpt PIPELINE --prompt ...`).

A pipeline directory holds, per model_index.json: vqvae/ (VQModel: ids <-> images), text_encoder/
(CLIPTextModel) and tokenizer/ (CLIPTokenizer), transformer/ (Transformer2DModel over K + 1 ids with
cross-attention to the text), scheduler/ (VQDiffusionScheduler: K + 1 classes, T steps, the cumulative
alpha / gamma endpoints) and learned_classifier_free_sampling_embeddings/ (the null text of guidance).
What each becomes here:

    scheduler config     our VQDiffusion process (dit/processes/vq_diffusion.py): K = num_vec_classes - 1,
                         T = num_train_timesteps, its endpoints, replace_max 0 (the released schedule)
    transformer          TextTokenTransformer (dit/networks/text_token_transformer.py): (x, t, cond) -> log p(x~0)
    tokenizer + encoder  TextEncoder below: the pipeline's _encode_prompt, last hidden state / its norm
    learned embeddings   the unconditional input of guidance when `learnable`, else the empty prompt's
    vqvae                PipelineDecoder below: codebook lookup, then decode(force_not_quantize=True)

Sampling is our `ancestral` sampler (dit/sampling/vq_diffusion.py) with classifier-free guidance on
log-probabilities (guided_log_probs: uncond + s (cond - uncond), renormalised, as the pipeline) and
top-p truncation after guidance (`truncate`). At steps = T this is the pipeline's chain, step for step
(tests/test_vq_pipeline.py). Where the two differ:
- fewer steps: ours is the paper's fast inference (strided times T, T - dt, ..., each step through the
  closed-form q over the skip); the pipeline's set_timesteps(n) starts all-[MASK] at its index n - 1 (our
  t = n) and walks one step at a time: for n < T its first step is at a time whose inputs the model never
  saw all-masked;
- truncation: the same rule (per position, keep the most likely ids while the mass before them is below
  r; always the first), but the pipeline also applies it at r = 1, where a float32 cumulative sum that
  reaches 1.0 drops the tail (ids of probability ~1e-7); at r = 1 ours keeps everything. The pipeline
  does not renormalise after truncating; the posterior and the draw are invariant to that constant;
- guidance: the pipeline guides only for scale > 1; ours guides for any scale != 1 (scale 1: none);
- the draw: the pipeline's scheduler uses Gumbel-max from one torch.rand generator over the batch;
  ours draws sample i from seed i (PerSampleNoise), by inverse CDF unless categorical="gumbel".

Safety: only the component classes above are built (each with its own class's from_pretrained; no class
named in model_index.json is imported, no remote code). Weights are read from safetensors when a
component has them; a component with only .bin weights is read by diffusers / transformers with
torch.load(weights_only=True), which refuses a pickle that would run code.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dit.errors import UserError
from dit.networks.text_token_transformer import TEXT, TextTokenTransformer

PIPELINE_CLASS = "VQDiffusionPipeline"
NULL = "learned_classifier_free_sampling_embeddings"
COMPONENTS = ("vqvae", "text_encoder", "tokenizer", "transformer", "scheduler", NULL)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FIX = ("download it where there is internet (`huggingface-cli download {id} --local-dir DIR`) and pass "
           "--ckpt DIR")


def pipeline_class(path: Path) -> str | None:
    """The `_class_name` of a diffusers pipeline directory, None if `path` is not one."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def is_vq_pipeline(spec: str) -> bool:
    """Whether `spec` is a local VQDiffusionPipeline directory (read from model_index.json only)."""
    path = Path(str(spec)).expanduser()
    return path.is_dir() and pipeline_class(path) == PIPELINE_CLASS


FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json", ".npz")  # a file's path, never a repo


def is_hub_id(spec: str) -> bool:
    """`owner/name` that is not a local path (nor names a checkpoint file)."""
    spec = str(spec)
    return (bool(HUB_ID.match(spec)) and not spec.lower().endswith(FILE_SUFFIXES)
            and not Path(spec).expanduser().exists())


def resolve(spec: str) -> Path:
    """The local directory of pipeline `spec`: a directory, or a hub id fetched into the hub cache
    (configs and safetensors; .bin only for components without safetensors). Offline, a hub id that
    is not cached is a one-line error naming the fix."""
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        if pipeline_class(path) != PIPELINE_CLASS:
            found = pipeline_class(path)
            raise UserError(f"{spec} is not a VQ-Diffusion pipeline (model_index.json names "
                            f"{found or 'no pipeline class'}, not {PIPELINE_CLASS})")
        return path
    if not is_hub_id(spec):
        raise UserError(f"pipeline '{spec}' not found: give a VQDiffusionPipeline directory or a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(str(spec), allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        missing = [c for c in ("vqvae", "text_encoder", "transformer", NULL)
                   if (root / c).is_dir() and not any((root / c).glob("*.safetensors"))]
        if missing:
            root = Path(snapshot_download(str(spec), allow_patterns=[f"{c}/*.bin" for c in missing] + ["*.json", "*.txt"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: one line either way
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"{spec} is not a local directory and could not be fetched from the hub ({type(e).__name__}: "
                        f"{reason}); " + HUB_FIX.format(id=spec)) from None
    if pipeline_class(root) != PIPELINE_CLASS:
        raise UserError(f"{spec} is not a VQ-Diffusion pipeline (its model_index.json names {pipeline_class(root)})")
    return root


def _check_index(root: Path) -> None:
    """Every component present, of the library and class this reader builds."""
    index = json.loads((root / "model_index.json").read_text())
    missing = [c for c in COMPONENTS if c not in index or not (root / c).is_dir()]
    if missing:
        raise UserError(f"{root} lacks the pipeline component(s) {', '.join(missing)}")
    expected = {"vqvae": "VQModel", "text_encoder": "CLIPTextModel", "transformer": "Transformer2DModel",
                "scheduler": "VQDiffusionScheduler", NULL: "LearnedClassifierFreeSamplingEmbeddings"}
    for name, cls in expected.items():
        entry = index[name]
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == cls):
            raise UserError(f"{root}: component {name} is {entry}, expected a {cls}; this reader builds only "
                            "VQDiffusionPipeline's own component classes")


def _weights_kwargs(folder: Path) -> dict:
    """use_safetensors=True where the folder has safetensors (never falls back to a pickle there)."""
    return {"use_safetensors": True} if any(folder.glob("*.safetensors")) else {}


@dataclass
class TextEncoder:
    """Prompts -> normalised text embeddings (B, S, D), as VQDiffusionPipeline._encode_prompt, one prompt
    at a time (so a prompt's embedding does not depend on the batch it is in)."""

    tokenizer: object
    model: torch.nn.Module
    null_embeddings: torch.Tensor | None  # (S, D) learned, or None: the empty prompt's

    @property
    def length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def ids(self, prompt: str) -> torch.Tensor:
        """(1, S) token ids: padded to S and, for a longer prompt, cut after S tokens as the pipeline does
        (not the tokenizer's truncation, which would end on the end-of-text token)."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.length, return_tensors="pt").input_ids
        if ids.shape[-1] > self.length:
            dropped = self.tokenizer.batch_decode(ids[:, self.length:])[0]
            print(f"warning: the text encoder reads {self.length} tokens; this part of the prompt is ignored: {dropped!r}",
                  file=sys.stderr)
        return ids[:, : self.length]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        rows = []
        for p in prompts:
            h = self.model(self.ids(p).to(device))[0].float()  # (1, S, D) last hidden state
            rows.append(h / h.norm(dim=-1, keepdim=True))  # VQ-Diffusion normalises it (the pipeline's NOTE)
        return torch.cat(rows)

    @torch.no_grad()
    def null(self, batch: int) -> torch.Tensor:
        """The unconditional input (B, S, D): the learned embeddings (not normalised, as the pipeline),
        else the empty prompt's normalised embeddings."""
        if self.null_embeddings is not None:
            return self.null_embeddings.float().unsqueeze(0).expand(batch, -1, -1)
        return self.encode([""]).expand(batch, -1, -1)


class PipelineDecoder:
    """Token ids -> images through the pipeline's VQModel, as VQDiffusionPipeline.__call__ decodes:
    codebook vectors of the ids, then the decoder without re-quantising. Images in [-1, 1] (our pixel
    convention, dit/autoencoders/pixels.py; the pipeline returns (x / 2 + 0.5).clamp(0, 1))."""

    def __init__(self, vqvae):
        self.vae = vqvae.eval().requires_grad_(False)

    @property
    def codebook_size(self) -> int:
        return int(self.vae.config.num_vq_embeddings)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        B, H, W = ids.shape
        shape = (B, H, W, self.vae.config.vq_embed_dim)
        emb = self.vae.quantize.get_codebook_entry(ids.reshape(-1).long(), shape=shape)  # (B, D, H, W)
        return self.vae.decode(emb, force_not_quantize=True).sample.float()


@dataclass
class TextPipeline:
    network: TextTokenTransformer
    process: object  # VQDiffusion
    text: TextEncoder
    decoder: PipelineDecoder
    source: str  # the local directory
    scheduler_config: dict

    def to(self, device) -> "TextPipeline":
        self.network.to(device)
        self.text.model.to(device)
        if self.text.null_embeddings is not None:
            self.text.null_embeddings = self.text.null_embeddings.to(device)
        self.decoder.vae.to(device)
        return self


def process_from_scheduler(cfg: dict):
    """Our VQDiffusion process from a VQDiffusionScheduler config (the same tables: tests/test_vq_diffusion.py)."""
    from dit.processes.vq_diffusion import VQDiffusion
    from dit.processes.vq_schedule import RELEASED

    try:
        K, T = int(cfg["num_vec_classes"]) - 1, int(cfg.get("num_train_timesteps", 100))
    except (KeyError, TypeError, ValueError):
        raise UserError("the pipeline's scheduler_config.json has no num_vec_classes") from None
    ends = dict(alpha_start=cfg.get("alpha_cum_start", RELEASED["alpha_start"]),
                alpha_end=cfg.get("alpha_cum_end", RELEASED["alpha_end"]),
                gamma_start=cfg.get("gamma_cum_start", RELEASED["gamma_start"]),
                gamma_end=cfg.get("gamma_cum_end", RELEASED["gamma_end"]))
    return VQDiffusion(K, T, replace_max=0.0, **{k: float(v) for k, v in ends.items()})


def load_vq_pipeline(spec: str, device="cpu") -> TextPipeline:
    """Read a VQDiffusionPipeline (directory or hub id) into our network, process, text encoder and decoder,
    checking that the components agree (K, T, text width and length)."""
    from diffusers import Transformer2DModel, VQModel
    from diffusers.pipelines.deprecated.vq_diffusion.pipeline_vq_diffusion import LearnedClassifierFreeSamplingEmbeddings
    from transformers import CLIPTextModel, CLIPTokenizer

    root = resolve(spec)
    _check_index(root)
    sched_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    process = process_from_scheduler(sched_cfg)

    def load(cls, name, **kw):
        folder = root / name
        try:
            return cls.from_pretrained(str(folder), local_files_only=True, **_weights_kwargs(folder), **kw)
        except Exception as e:  # noqa: BLE001 - missing or unreadable weights: one line naming the component
            reason = str(e).splitlines()[0][:200] if str(e) else ""
            raise UserError(f"could not load {name} of {root} ({type(e).__name__}: {reason})") from None

    transformer = load(Transformer2DModel, "transformer")
    vqvae = load(VQModel, "vqvae")
    text_model = load(CLIPTextModel, "text_encoder")
    null = load(LearnedClassifierFreeSamplingEmbeddings, NULL)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"could not load the tokenizer of {root} ({type(e).__name__}: {str(e)[:200]})") from None

    K, T, S = process.codebook_size, process.T, int(tokenizer.model_max_length)
    tcfg = transformer.config
    width = text_model.config.hidden_size
    checks = [
        (getattr(transformer, "is_input_vectorized", False), "the transformer does not take token ids (num_vector_embeds)"),
        (tcfg.num_vector_embeds == K + 1, f"the transformer takes {tcfg.num_vector_embeds} ids, the scheduler {K + 1}"),
        (vqvae.config.num_vq_embeddings == K, f"the VQModel has {vqvae.config.num_vq_embeddings} codes, the scheduler K = {K}"),
        ((tcfg.num_embeds_ada_norm or 0) >= T, f"the transformer embeds {tcfg.num_embeds_ada_norm} steps, the scheduler has T = {T}"),
        (tcfg.cross_attention_dim == width, f"the transformer attends to {tcfg.cross_attention_dim}-wide text, the encoder gives {width}"),
        (S <= text_model.config.max_position_embeddings, f"the tokenizer pads to {S} tokens, the encoder has "
                                                         f"{text_model.config.max_position_embeddings} positions"),
    ]
    if null.learnable:
        shape = tuple(null.embeddings.shape)
        checks.append((shape == (S, width), f"the learned null embeddings are {shape}, the text is ({S}, {width})"))
    for ok, message in checks:
        if not ok:
            raise UserError(f"{root}: {message}")
    network = TextTokenTransformer(transformer.eval().requires_grad_(False), S)
    text_model = text_model.eval().requires_grad_(False)
    null_embeddings = null.embeddings.detach().clone() if null.learnable else None
    text = TextEncoder(tokenizer, text_model, null_embeddings)
    pipe = TextPipeline(network, process, text, PipelineDecoder(vqvae), str(root), sched_cfg)
    return pipe.to(device)


@torch.no_grad()
def sample_tokens(pipe: TextPipeline, prompts: list[str], noise, steps: int | None = None, cfg_scale: float = 5.0,
                  truncation: float = 1.0, categorical: str = "inverse-cdf", precision: str = "no",
                  callback=None, progress: bool = False) -> torch.Tensor:
    """Token ids (B, H, W) for `prompts` (one sample each) with our ancestral sampler; noise: the
    sampler's noise callable (a PerSampleNoise: sample i depends only on its seed)."""
    from dit.precision import autocast_dtype
    from dit.sampling.catalog import run_sampler
    from dit.sampling.vq_diffusion import guided_log_probs

    device = next(pipe.network.parameters()).device
    dtype = autocast_dtype(precision)

    def net(x, t, cond):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return pipe.network(x, t, cond).float()

    B = len(prompts)
    cond = {TEXT: pipe.text.encode(list(prompts)).to(device)}
    uncond = {TEXT: pipe.text.null(B).to(device)}
    denoiser = guided_log_probs(net, cond, uncond, cfg_scale)
    x_T = pipe.process.prior(noise, B, pipe.network.input_shape, device)
    return run_sampler(denoiser, pipe.process, x_T, "ancestral", steps or pipe.process.default_sampling_steps, noise, progress,
                       truncation=truncation, callback=callback, categorical=categorical)


def generate_from_prompts(pipe: TextPipeline, prompts: list[str], seeds: list[int], steps: int | None = None,
                          cfg_scale: float = 5.0, truncation: float = 1.0, precision: str = "no",
                          categorical: str = "inverse-cdf") -> np.ndarray:
    """uint8 NHWC images, sample i drawn from seed seeds[i] with prompt prompts[i]."""
    from dit.autoencoders.pixels import to_uint8
    from dit.sampling.noise import PerSampleNoise

    device = next(pipe.network.parameters()).device
    ids = sample_tokens(pipe, prompts, PerSampleNoise(seeds, device), steps, cfg_scale, truncation, categorical, precision)
    return to_uint8(pipe.decoder.decode(ids))
