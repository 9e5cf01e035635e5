"""SDXL base and refiner against diffusers' own pipelines: an oracle the engine does not share code with.

The models. Tiny diffusers/transformers modules are built here from configs written out below, in the shape of
the published SDXL configs (not from the engine's tiny.py or its config skeletons): a UNet with SDXL's
"text_time" size embedding, CLIP-L (CLIPTextModel, quick_gelu) and OpenCLIP-bigG (CLIPTextModelWithProjection,
gelu, a projection narrower than its width so a transposed projection cannot go unnoticed) stand-ins, a VAE.
Head conventions are SDXL's: UNet heads of 64 channels (diffusers' misnamed `attention_head_dim` is the number
of heads per level, channels // 64: 1, 1, 2 here, so one level has two heads) and text heads of 64 (widths 64
and 128: 1 and 2 heads). Weights come from a fixed seed, scaled by fan-in so activations stay O(1). The
modules are written as one single file in the original LDM/sgm layout (ldm_layout.to_ldm_state_dict, plus the
OpenCLIP logit_scale real files carry) and loaded back through the engine's normal path (PipelineManager:
detect from shapes → build → PromptEncoder/DualEncoder). The oracle side is diffusers' StableDiffusionXLPipeline
(base) and StableDiffusionXLImg2ImgPipeline (refiner: the second encoder only, aesthetic-score time ids) made
of the *original* modules, with the tokenizers bundled in webui/engine/models/configs/sdxl. That the file itself is in
the real layout is checked independently with diffusers' own single-file converters.

What is compared, stage by stage: token ids of every 77-token chunk for both encoders (and open_clip's own
tokenizer, A1111's for bigG); hidden states of both encoders and the pooled output; time ids; the UNet output
and one CFG denoiser call for identical inputs; a whole Euler job's final latent.

Where A1111 (which the engine follows) and diffusers differ on purpose, and what the tests do about it:
- Prompts longer than 75 tokens: A1111 encodes 75-token chunks (BREAK and the comma backtrack start new ones)
  separately and concatenates them; diffusers truncates at 77. Each engine chunk is compared with diffusers'
  encoding of that chunk's own text; the pooled output is the first chunk's (A1111: zs[0].pooled).
- An empty negative prompt: A1111 zeros SDXL's whole text conditioning, context and pooled
  (sd_models_xl.get_learned_conditioning: force_zero_embeddings=['txt'] when is_negative_prompt and every text
  is ''); diffusers does the same for negative_prompt=None with force_zeros_for_empty_prompt (the base's
  default; the refiner pipeline is built with it here, as A1111 zeros for both), while negative_prompt=""
  would encode "".
- Refiner aesthetic score: 6.0 for the prompt and 2.5 for the negative prompt in both (A1111's
  sdxl_refiner_high/low_aesthetic_score, diffusers' aesthetic_score / negative_aesthetic_score defaults).
- Sampling: diffusers' EulerDiscreteScheduler loop is not A1111's (integer "leading" timesteps, its own sigma
  schedule), so the oracle job is k-diffusion's sample_euler over diffusers' UNet, CompVisDenoiser scalings,
  diffusers' encode_prompt conditioning and diffusers' time ids, with a CFG of uncond + (cond − uncond)·scale.
- alphas_cumprod: A1111 (sgm's LegacyDDPMDiscretization) computes it in float64 and casts to float32, as the
  engine does; diffusers' scheduler computes it in float32 (up to 1e-6 relative apart). At CFG 7 that alone
  moves a denoised latent by ~2e-5 relative, so the one-call denoiser comparison uses A1111's schedule (from
  ldm's own make_beta_schedule), and the Euler job diffusers' schedule with its 1e-4 relative tolerance.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from oracle.originals import a1111_noise, load_kdiffusion, load_ldm
from webui.engine.jobs import decode
from webui.engine.models.architecture import CONFIGS_DIR
from webui.engine.models.ldm_layout import to_ldm_state_dict
from webui.engine.params import GenerationParams
from webui.engine.prompts.conditioning import build_conditioning
from webui.engine.samplers.denoiser import CFGDenoiser

SEED = 1234
TOL = 1e-5  # text, time ids, UNet: max abs difference
JOB_RTOL = 1e-4  # the final latent: max abs difference relative to the latent's max abs
CFG = 7.0
STEPS = 6
SIZE = 64  # px: 8×8 latents

# ------------------------------------------------------------------------------------------ tiny models

_TEXT = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0,
             # as SDXL's published text encoder configs: eos_token_id 2 makes transformers pool at the argmax id
             # (the first EOS), which is what OpenCLIP/sgm do
             bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_L = dict(_TEXT, hidden_size=64, num_attention_heads=1, num_hidden_layers=3, intermediate_size=160,
              hidden_act="quick_gelu")
BIG_G = dict(_TEXT, hidden_size=128, num_attention_heads=2, num_hidden_layers=3, intermediate_size=288,
             hidden_act="gelu", projection_dim=96)
_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 128),
             attention_head_dim=(1, 1, 2), addition_embed_type="text_time", addition_time_embed_dim=256,
             use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32, act_fn="silu")
UNETS = {
    # SDXL: no attention at full resolution, deeper transformers further down (real: 1, 2, 10)
    "sdxl": dict(_UNET, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64 + 128,
                 projection_class_embeddings_input_dim=96 + 6 * 256),
    # the refiner: attention only in the middle levels (real: 4 levels, Down/CrossAttn/CrossAttn/Down, depth 4)
    "sdxl_refiner": dict(_UNET, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         transformer_layers_per_block=1, cross_attention_dim=128,
                         projection_class_embeddings_input_dim=96 + 5 * 256),
}
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           norm_num_groups=32, sample_size=64, scaling_factor=0.13025)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
OPENCLIP_PREFIX = {"sdxl": "conditioner.embedders.1.model.", "sdxl_refiner": "conditioner.embedders.0.model."}


def _randomise(module: torch.nn.Module, g: torch.Generator) -> None:
    """Every parameter from `g`: matrices and kernels N(0, 1/fan-in), norm scales 1 ± 0.1, biases ± 0.02."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)
    module.eval().requires_grad_(False)


def _original_modules(family: str, seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng():  # the constructors' own init draws from the global RNG
        unet = UNet2DConditionModel(**UNETS[family])
        vae = AutoencoderKL(**VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L)) if family == "sdxl" else None
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**BIG_G))
    g = torch.Generator().manual_seed(seed)
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            _randomise(module, g)
    return unet, vae, text_encoder, text_encoder_2


def _tokenizers():
    from transformers import CLIPTokenizer

    folder = CONFIGS_DIR / "sdxl"
    return (CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True),
            CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"), local_files_only=True))


def _pipeline(family, unet, vae, text_encoder, text_encoder_2):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    tokenizer, tokenizer_2 = _tokenizers()
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    if family == "sdxl":
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=True, add_watermarker=False)
    return StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None,
                                            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: a second intra-op thread buys nothing here, and on a busy 2-core machine its
    spin-waits made this file 3× slower (43 s against 13 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["sdxl", "sdxl_refiner"])
def xl(request, tmp_path_factory):
    """One family: the original modules, diffusers' pipeline of them, the single file and the engine's model."""
    from safetensors.torch import save_file

    from webui.engine.manager import PipelineManager

    family = request.param
    unet, vae, text_encoder, text_encoder_2 = _original_modules(family)
    state_dict = {k: v.contiguous() for k, v in
                  to_ldm_state_dict(unet, vae, text_encoder, text_encoder_2, family=family).items()}
    state_dict[OPENCLIP_PREFIX[family] + "logit_scale"] = torch.tensor(math.log(100.0))  # as real files
    data = tmp_path_factory.mktemp(family)
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    path = folder / f"{family}.safetensors"
    save_file(state_dict, str(path))
    manager = PipelineManager(folder, data, device="cpu", dtype=torch.float32)
    model = manager.load(family)
    assert model.components.arch.family == family
    pipe = _pipeline(family, unet, vae, text_encoder, text_encoder_2)
    return SimpleNamespace(family=family, unet=unet, vae=vae, text_encoder=text_encoder,
                           text_encoder_2=text_encoder_2, pipe=pipe, path=path, manager=manager, model=model)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------ the file

def test_file_reads_back_with_diffusers_converters(xl):
    """The single file is in the real layout: diffusers' own converters give back the original tensors, and
    the engine's loaded modules hold them too."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors.torch import load_file

    sd = load_file(str(xl.path))
    parts = xl.model.components

    def same(converted, module, what, strip=""):
        converted = {k.removeprefix(strip): v for k, v in converted.items() if v is not None}
        want = {k.removeprefix(strip): v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
        assert sorted(converted) == sorted(want), what
        for key, tensor in want.items():
            assert torch.equal(converted[key], tensor), (what, key)

    same(convert_ldm_unet_checkpoint(sd, dict(xl.unet.config)), xl.unet, "UNet")
    same(convert_ldm_vae_checkpoint(sd, dict(xl.vae.config)), xl.vae, "VAE")
    if xl.text_encoder is not None:
        same(convert_ldm_clip_checkpoint(sd), xl.text_encoder, "CLIP-L", strip="text_model.")
    same(convert_open_clip_checkpoint(xl.text_encoder_2, sd, prefix=OPENCLIP_PREFIX[xl.family]), xl.text_encoder_2,
         "OpenCLIP-bigG")
    for mine, theirs in ((parts.unet, xl.unet), (parts.vae, xl.vae), (parts.text_encoder, xl.text_encoder),
                         (parts.text_encoder_2, xl.text_encoder_2)):
        if theirs is None:
            assert mine is None
            continue
        got, want = mine.state_dict(), theirs.state_dict()
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k], want[k]) for k in want)


# ------------------------------------------------------------------------------------------ prompts

# Words the CLIP tokenizer keeps whole, so a prompt's token count is its word count.
_WORDS = ("cat dog red blue green house tree river sky sun moon star girl boy car road city night day rain snow "
          "fire water stone light").split()


def _words(start: int, stop: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(start, stop))


# name → (prompt, the text of each chunk A1111 makes of it). The long one has a comma 5 tokens before the
# first chunk would be full: A1111's comma backtrack (20) ends that chunk after the comma.
PROMPTS = {
    "short": ("a red cat, sitting", ["a red cat, sitting"]),
    "empty": ("", [""]),
    "76 tokens": (_words(0, 76), [_words(0, 75), _words(75, 76)]),
    "200 tokens": (_words(0, 70) + ", " + _words(70, 199),
                   [_words(0, 70) + ",", _words(70, 145), _words(145, 199)]),
    "BREAK": ("a cat BREAK a dog", ["a cat", "a dog"]),
}


def _engine_encoders(xl):
    """(CLIP-L PromptEncoder or None, bigG PromptEncoder)."""
    encoder = xl.model.encoder
    return (encoder.first, encoder.second) if xl.family == "sdxl" else (None, encoder)


def _diffusers_ids(tokenizer, text: str) -> list[int]:
    """What diffusers' encode_prompt feeds the encoder for `text`."""
    return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids


@pytest.mark.parametrize("name", list(PROMPTS))
def test_token_ids_of_every_chunk(xl, name):
    prompt, texts = PROMPTS[name]
    assert all(len(xl.pipe.tokenizer_2.tokenize(w)) == 1 for w in _WORDS)
    open_clip = load_ldm().open_clip
    first, second = _engine_encoders(xl)
    for engine, theirs in ((first, xl.pipe.tokenizer), (second, xl.pipe.tokenizer_2)):
        if engine is None:
            continue
        chunks, _ = engine.tokenize_line(prompt)
        assert len(chunks) == len(texts), name
        for i, (chunk, text) in enumerate(zip(chunks, texts)):
            want = _diffusers_ids(theirs, text)
            where = next((j for j, (a, b) in enumerate(zip(chunk.tokens, want)) if a != b), len(want))
            assert chunk.tokens == want, (f"{name}: chunk {i} of {Path(engine.tokenizer.name_or_path).name} differs "
                                          f"from position {where}: engine {chunk.tokens[where:where + 4]}…, "
                                          f"diffusers {want[where:where + 4]}…")
            if theirs is xl.pipe.tokenizer_2:  # bigG: open_clip's own tokenizer (A1111's) agrees
                assert want == open_clip.tokenize([text])[0].tolist()
    # what padding looks like: CLIP-L pads with EOS, bigG with 0, both after the EOS that follows the text
    ids = second.tokenize_line("a red cat, sitting")[0][0].tokens
    assert ids[:7] == [49406, 320, 736, 2368, 267, 4919, 49407] and ids[7:] == [0] * 70


@pytest.mark.parametrize("name", list(PROMPTS))
def test_hidden_states_and_pooled(xl, name):
    """Each chunk's hidden states ([CLIP-L penultimate | bigG penultimate]) and the first chunk's pooled bigG
    output equal diffusers' encode_prompt of that chunk's text."""
    prompt, texts = PROMPTS[name]
    context, pooled = xl.model.encoder.encode_with_pooled(prompt)
    assert context.shape == (1, 77 * len(texts), xl.unet.config.cross_attention_dim)
    width_1 = CLIP_L["hidden_size"] if xl.family == "sdxl" else 0
    for i, text in enumerate(texts):
        with torch.no_grad():
            want, _, want_pooled, _ = xl.pipe.encode_prompt(text, device="cpu", do_classifier_free_guidance=False)
        got = context[:, 77 * i:77 * (i + 1)]
        if width_1:
            diff = _max_abs(got[..., :width_1], want[..., :width_1])
            assert diff < TOL, f"{name}: CLIP-L hidden states of chunk {i} differ by {diff:.3g}"
        diff = _max_abs(got[..., width_1:], want[..., width_1:])
        assert diff < TOL, f"{name}: bigG hidden states of chunk {i} differ by {diff:.3g}"
        if i == 0:
            diff = _max_abs(pooled, want_pooled)
            assert diff < TOL, f"{name}: pooled output differs by {diff:.3g}"


@pytest.mark.parametrize("negative", ["ugly, blurry", ""])
def test_negative_prompt_conditioning(xl, negative):
    """The job's uncond: the negative prompt encoded, or all zeros (context and pooled) when it is empty."""
    cond, _ = build_conditioning(xl.model.encoder, "a red cat, sitting", negative, STEPS,
                                 zero_empty_negative=True)
    conds, _, uncond = cond.at_step(0)
    pooled_conds, pooled_uncond = cond.pooled_at_step(0)
    with torch.no_grad():
        embeds, neg_embeds, pooled, neg_pooled = xl.pipe.encode_prompt(
            "a red cat, sitting", device="cpu", do_classifier_free_guidance=True,
            negative_prompt=negative or None)  # None: diffusers' zeroing of an empty negative prompt
    diffs = {"context": _max_abs(conds[0], embeds), "pooled": _max_abs(pooled_conds[0], pooled),
             "negative context": _max_abs(uncond, neg_embeds), "negative pooled": _max_abs(pooled_uncond, neg_pooled)}
    assert max(diffs.values()) < TOL, diffs
    assert (not negative) == (neg_embeds.abs().max() == 0)


# ------------------------------------------------------------------------------------------ time ids

def _diffusers_time_ids(xl, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt's, negative prompt's) time ids as diffusers' pipelines make them: no crop, target = original."""
    size, crop = (height, width), (0, 0)
    projection = xl.text_encoder_2.config.projection_dim
    if xl.family == "sdxl":
        ids = xl.pipe._get_add_time_ids(size, crop, size, dtype=torch.float32, text_encoder_projection_dim=projection)
        return ids, ids
    return xl.pipe._get_add_time_ids(size, crop, size, aesthetic_score=6.0, negative_aesthetic_score=2.5,
                                     negative_original_size=size, negative_crops_coords_top_left=crop,
                                     negative_target_size=size, dtype=torch.float32,
                                     text_encoder_projection_dim=projection)


def _engine_time_ids(xl, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt's, negative prompt's) time ids as the engine's CFG denoiser passes them to the UNet."""
    time_ids = xl.model.components.arch.model_family.time_ids(height, width)
    return time_ids[:1], time_ids[-1:]


@pytest.mark.parametrize("height, width", [(SIZE, SIZE), (64, 96), (1024, 768)])
def test_time_ids(xl, height, width):
    ours, theirs = _engine_time_ids(xl, height, width), _diffusers_time_ids(xl, height, width)
    for got, want, which in zip(ours, theirs, ("prompt", "negative prompt")):
        assert _max_abs(got, want) < TOL, (which, got.tolist(), want.tolist())


# ------------------------------------------------------------------------------------------ UNet, sampling

class _DiffusersEps(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser wraps: alphas_cumprod and apply_model(x, t, cond) → eps, here
    diffusers' UNet with SDXL's added conditioning."""

    def __init__(self, unet, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("alphas_cumprod", alphas_cumprod)

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond["context"], added_cond_kwargs=cond["added"]).sample


def _a1111_alphas_cumprod() -> torch.Tensor:
    """A1111's SDXL schedule (sd_models_xl.extend_sdxl: sgm's LegacyDDPMDiscretization): ldm's own
    make_beta_schedule("linear", …) — sqrt-spaced betas in float64 — cumprod in float64, then float32."""
    import numpy as np

    betas = load_ldm().make_beta_schedule("linear", SCHEDULER["num_train_timesteps"],
                                          linear_start=SCHEDULER["beta_start"], linear_end=SCHEDULER["beta_end"])
    return torch.asarray(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


def _oracle(xl, prompt: str, negative: str, alphas_cumprod: torch.Tensor, height: int = SIZE, width: int = SIZE):
    """k-diffusion's CompVisDenoiser over diffusers' UNet with diffusers' conditioning and time ids, and
    classifier-free guidance as A1111 combines it: uncond + (cond − uncond) · scale, one batch [cond, uncond]."""
    K = load_kdiffusion()
    with torch.no_grad():
        embeds, neg_embeds, pooled, neg_pooled = xl.pipe.encode_prompt(
            prompt, device="cpu", do_classifier_free_guidance=True, negative_prompt=negative or None)
    ids, neg_ids = _diffusers_time_ids(xl, height, width)
    cond = {"context": torch.cat([embeds, neg_embeds]),
            "added": {"text_embeds": torch.cat([pooled, neg_pooled]), "time_ids": torch.cat([ids, neg_ids])}}
    denoiser = K.external.CompVisDenoiser(_DiffusersEps(xl.unet, alphas_cumprod), quantize=False)

    def cfg(x, sigma):
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond)
        positive, uncond = out.chunk(2)
        return uncond + (positive - uncond) * CFG

    return denoiser, cfg


def _engine_cfg(xl, prompt: str, negative: str):
    components = xl.model.components
    conditioning, _ = build_conditioning(xl.model.encoder, prompt, negative, STEPS, zero_empty_negative=True)
    time_ids = components.arch.model_family.time_ids(SIZE, SIZE)
    return CFGDenoiser(xl.model.denoiser, conditioning, CFG, time_ids=time_ids)


def test_unet_and_cfg_denoiser(xl):
    """Identical (x, t, context, pooled, time ids) give the same UNet output; one CFG denoiser call at a given
    sigma gives the same denoised latent."""
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, xl.unet.config.cross_attention_dim, generator=g)
    added = {"text_embeds": torch.randn(2, BIG_G["projection_dim"], generator=g),
             "time_ids": torch.cat(_diffusers_time_ids(xl, SIZE, SIZE))}
    t = torch.tensor([999.0, 420.5])
    with torch.no_grad():
        want = xl.unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        got = xl.model.components.unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
    diff = _max_abs(got, want)
    assert want.abs().max() > 0.1 and diff < TOL, f"UNet outputs differ by {diff:.3g}"

    # The schedule: A1111's float64-computed one; diffusers' float32 cumprod is within rounding of it. At CFG 7
    # that rounding alone (t moves by ~1e-4) would move a denoised latent by ~1e-5 relative, so this one-call
    # comparison uses A1111's schedule and the job below diffusers' own.
    alphas = _a1111_alphas_cumprod()
    assert float(((xl.pipe.scheduler.alphas_cumprod - alphas).abs() / alphas).max()) < 2e-6
    prompt, negative = "a red cat, sitting", "ugly, blurry"
    denoiser, oracle = _oracle(xl, prompt, negative, alphas)
    assert torch.equal(xl.model.denoiser.sigmas, denoiser.sigmas)
    engine = _engine_cfg(xl, prompt, negative)
    for sigma in (14.6, 1.3, 0.05):
        s = torch.tensor([sigma])
        latent = x[:1] * sigma
        with torch.no_grad():
            want, got = oracle(latent, s), engine(latent, s)
        diff = _max_abs(got, want)
        assert diff < TOL * max(1.0, float(want.abs().max())), f"denoised at sigma {sigma} differs by {diff:.3g}"


@pytest.fixture
def engine_latents(monkeypatch):
    """The latents each engine job hands to the VAE decoder (the sampler's final output)."""
    captured = []
    original = decode.latents_to_images

    def capture(vae, latents):
        captured.append(latents.detach().clone())
        return original(vae, latents)

    monkeypatch.setattr(decode, "latents_to_images", capture)
    return captured


@pytest.mark.parametrize("schedule, negative", [("Automatic", "ugly, blurry"), ("Karras", "")])
def test_euler_job_final_latent(xl, engine_latents, schedule, negative):
    """A 6-step Euler txt2img job (seed noise on the CPU × sigmas[0], CFG 7) ends at the latent k-diffusion's
    sample_euler reaches over diffusers' modules (with diffusers' float32 schedule: see the module docstring)."""
    prompt = "a red cat, sitting"
    params = GenerationParams(prompt=prompt, negative_prompt=negative, steps=STEPS, cfg_scale=CFG, seed=SEED,
                              width=SIZE, height=SIZE, sampler_name="Euler", scheduler=schedule, rng="CPU")
    xl.manager.txt2img(params, None)
    (got,) = engine_latents

    K = load_kdiffusion()
    denoiser, cfg = _oracle(xl, prompt, negative, xl.pipe.scheduler.alphas_cumprod)
    if schedule == "Karras":  # A1111: the model's own sigma range, rho 7
        sigmas = K.sampling.get_sigmas_karras(STEPS, denoiser.sigma_min.item(), denoiser.sigma_max.item())
    else:  # "Automatic" for Euler: the model's own discrete schedule
        sigmas = denoiser.get_sigmas(STEPS)
    x = a1111_noise(SEED, (1, 4, SIZE // 8, SIZE // 8)) * sigmas[0]
    with torch.no_grad():
        want = K.sampling.sample_euler(cfg, x, sigmas, disable=True)
    scale = float(want.abs().max())
    assert math.isfinite(scale) and scale > 0.1
    relative = _max_abs(got, want) / scale
    assert relative < JOB_RTOL, f"final latents differ by {relative:.3g} of their largest value ({scale:.3g})"
