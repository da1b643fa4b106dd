"""Diffusion transformers: parameter counts (hand derivations and published figures), text encoders
and VAE decoders, and the pipelines' latent-token arithmetic."""
import json

import pytest

from workloads import dit
from workloads.dit import DiTError, DiTSpec, GenerationRequest, latent_shape


def lin(i, o):
    return i * o + o


def test_flux_dev_count_by_hand():
    """FLUX.1-dev from its diffusers modules, written out: D = 24 x 128 = 3072."""
    D, d = 3072, 128
    double = 2 * lin(D, 6 * D) + 8 * lin(D, D) + 4 * d + 2 * (lin(D, 4 * D) + lin(4 * D, D))
    single = lin(D, 3 * D) + 3 * lin(D, D) + 2 * d + lin(D, 4 * D) + lin(5 * D, D)
    embed = lin(64, D) + 2 * (lin(256, D) + lin(D, D)) + lin(768, D) + lin(D, D) + lin(4096, D)
    head = lin(D, 2 * D) + lin(D, 64)
    expected = embed + 19 * double + 38 * single + head
    assert dit.load("flux.1-dev").dit.param_count() == expected == 11_901_408_320


def test_schnell_is_dev_without_the_guidance_embedder():
    dev, schnell = dit.load("flux.1-dev").dit, dit.load("flux.1-schnell").dit
    assert dev.param_count() - schnell.param_count() == lin(256, 3072) + lin(3072, 3072)


@pytest.mark.parametrize("name", dit.names())
def test_published_counts_to_their_rounding(name):
    """Each catalog figure (workloads/dit_catalog.yaml, with its source) matches the count computed
    from the config at the rounding it was published with; SD3's figures include the stored
    position table; Wan 1.3B's is a model name (computed 1.42B), skipped."""
    entry = dit.catalog_entry(name)["published_params"]
    if entry.get("name_only"):
        pytest.skip("the published figure is a name, not a count")
    spec = dit.load(name).dit
    count = dit.stored_param_count(spec) if entry.get("counts_buffers") else spec.param_count()
    step = float(entry["rounding"])
    assert round(count / step) * step == pytest.approx(float(entry["value"]))


def test_sd35_medium_dual_attention_layers_add_their_weights():
    base = json.loads((dit.CONFIG_DIR / "sd3.5-medium.json").read_text())
    plain = DiTSpec.from_diffusers_config({**base, "dual_attention_layers": []})
    dual = DiTSpec.from_diffusers_config(base)
    D, d = 1536, 64
    per_layer = (lin(D, 9 * D) - lin(D, 6 * D)) + 4 * lin(D, D) + 2 * d
    assert dual.param_count() - plain.param_count() == 13 * per_layer


def test_text_encoders_match_published_counts():
    """HF counts: T5EncoderModel(google/t5-v1_1-xxl) 4,762,310,656; CLIPTextModel(ViT-L/14)
    123,060,480; OpenCLIP bigG text with projection 694,659,840."""
    enc = dit.TEXT_ENCODERS
    assert enc["t5-xxl"].param_count() == 4_762_310_656
    assert enc["clip-l"].param_count() == 123_060_480
    assert enc["clip-g"].param_count() == 694_659_840
    # umT5 differs from T5 only by vocabulary and per-layer relative-bias tables
    assert enc["umt5-xxl"].param_count() - enc["t5-xxl"].param_count() == (256384 - 32128) * 4096 + 23 * 32 * 64


def test_sd_vae_decoder_count():
    """diffusers' Decoder of the SD/SDXL AutoencoderKL has 49,490,179 parameters; post_quant_conv
    (a 1x1 conv 4 -> 4) adds 20."""
    assert dit.VAES["sdxl-vae"].param_count() == 49_490_179 + 20


def test_vae_decode_flops_scale_with_pixels():
    vae = dit.VAES["flux-vae"]
    flops = lambda h, w: sum(2 * p * ci * co * t for _, p, ci, co, t in vae.conv_layers(h, w) if _ != "mid_attn")  # noqa: E731
    assert flops(2048, 2048) == pytest.approx(4 * flops(1024, 1024))


@pytest.mark.parametrize("name, height, width, frames, latent_frames, image_tokens, context", [
    # FLUX: 1024 / 8 = 128 latents, 2 x 2 packed -> 64 x 64 = 4096, + 512 T5 tokens
    ("flux.1-dev", 1024, 1024, 1, 1, 4096, 512),
    ("flux.1-schnell", 768, 1360, 1, 1, (768 // 16) * (1360 // 16), 256),
    # SD3.5: 128 x 128 latents, patch 2 -> 4096; 77 CLIP + 256 T5 tokens
    ("sd3.5-large", 1024, 1024, 1, 1, 4096, 333),
    ("pixart-sigma", 2048, 2048, 1, 1, 128 * 128, 300),
    # Wan 720p 81 frames: (81 - 1) / 4 + 1 = 21 latent frames, 90 x 160 latents, 1x2x2 -> 21*45*80
    ("wan2.1-t2v-14b", 720, 1280, 81, 21, 75600, 512),
    ("wan2.1-t2v-1.3b", 480, 832, 81, 21, 21 * 30 * 52, 512),
    # CogVideoX 49 frames 480x720: 13 latent frames, 60 x 90 latents, 2x2 -> 13 * 1350
    ("cogvideox-5b", 480, 720, 49, 13, 17550, 226),
    # HunyuanVideo 129 frames 720p: 33 x 45 x 80
    ("hunyuanvideo", 720, 1280, 129, 33, 118800, 256),
])
def test_latent_tokens_by_hand(name, height, width, frames, latent_frames, image_tokens, context):
    pipe = dit.load(name)
    shape = latent_shape(pipe, GenerationRequest(height=height, width=width, frames=frames))
    assert (shape.latent_frames, shape.image_tokens, shape.context_tokens) == (latent_frames, image_tokens, context)


def test_requests_the_pipeline_cannot_run_are_errors():
    wan, flux = dit.load("wan2.1-t2v-14b"), dit.load("flux.1-dev")
    with pytest.raises(DiTError, match="frames: 80 must be 1 \\+ a multiple of 4"):
        latent_shape(wan, GenerationRequest(height=720, width=1280, frames=80))
    with pytest.raises(DiTError, match="height: 1000 must be a multiple of 16"):
        latent_shape(flux, GenerationRequest(height=1000, width=1024))
    with pytest.raises(DiTError, match="frames: 5 must be 1 for the image model"):
        latent_shape(flux, GenerationRequest(height=1024, width=1024, frames=5))
    with pytest.raises(DiTError, match="steps: 0 must be a whole number from 1"):
        GenerationRequest(height=1024, width=1024, steps=0)
    with pytest.raises(DiTError, match="cached_fraction"):
        GenerationRequest(height=1024, width=1024, cached_fraction=1.0)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(DiTError, match="_class_name: unknown diffusion transformer 'UNet2DConditionModel'"):
        DiTSpec.from_diffusers_config({"_class_name": "UNet2DConditionModel"})
    base = json.loads((dit.CONFIG_DIR / "flux.1-dev.json").read_text())
    with pytest.raises(DiTError, match="num_layers = -1"):
        DiTSpec.from_diffusers_config({**base, "num_layers": -1})
    with pytest.raises(DiTError, match="'num_attention_heads' is missing"):
        DiTSpec.from_diffusers_config({k: v for k, v in base.items() if k != "num_attention_heads"})
    bad = tmp_path / "config.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DiTError, match="expected a JSON object"):
        DiTSpec.from_diffusers_config(bad)


def test_config_path_and_dict_agree_and_paths_load(tmp_path):
    path = dit.CONFIG_DIR / "wan2.1-t2v-14b.json"
    assert DiTSpec.from_diffusers_config(path, name="x") == DiTSpec.from_diffusers_config(
        json.loads(path.read_text()), name="x")
    folder = tmp_path / "my-wan"
    folder.mkdir()
    (folder / "config.json").write_text(path.read_text())
    assert dit.is_dit(str(folder)) and dit.is_dit("flux.1-dev") and not dit.is_dit("llama-3-8b")
    pipe = dit.load(str(folder))
    assert pipe.dit.param_count() == dit.load("wan2.1-t2v-14b").dit.param_count() and pipe.vae.name == "wan-vae"
