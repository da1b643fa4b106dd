"""ModelSpec: exact parameter counts, KV sizes, config reading and its errors."""
import json

import pytest

import workloads
from workloads import ModelError, ModelSpec

EXACT = {name: workloads.catalog_entry(name)["published_params"]
         for name in workloads.names() if "published_params" in workloads.catalog_entry(name)}


def test_catalog_has_the_required_models():
    required = {"llama-3.2-1b", "llama-3.2-3b", "llama-3-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen3-0.6b",
                "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b", "mixtral-8x7b",
                "deepseek-v3", "opt-6.7b", "opt-30b", "opt-175b", "falcon-7b"}
    assert required <= set(workloads.names())
    assert len(workloads.names()) >= 15


def test_llama_3_8b_has_the_published_count():
    assert workloads.load("llama-3-8b").param_count() == 8_030_261_248


@pytest.mark.parametrize("name", sorted(EXACT))
def test_parameter_count_equals_published(name):
    assert workloads.load(name).param_count() == EXACT[name]


def test_every_family_is_covered_by_an_exact_count():
    families = {workloads.load(n).family for n in EXACT}
    assert {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "falcon", "gpt2"} <= families


def test_approximate_counts_round_to_published():
    # DeepSeek-V3 (671B without the MTP module) and OPT publish only rounded sizes.
    assert round(workloads.load("deepseek-v3").param_count() / 1e9) == 671
    assert round(workloads.load("deepseek-v3").active_param_count() / 1e9) == 38  # "37B activated"
    assert round(workloads.load("opt-30b").param_count() / 1e9) == 30
    assert round(workloads.load("opt-175b").param_count() / 1e9) == 175
    assert workloads.load("opt-6.7b").param_count() == 6_658_473_984  # hand count, see PARAMS.md


def test_moe_active_params():
    mixtral = workloads.load("mixtral-8x7b")
    assert mixtral.active_param_count() == 12_879_925_248
    assert workloads.load("qwen3-30b-a3b").active_param_count() == 3_353_032_704


def test_qwen3_kv_sizes_are_the_published_ones():
    gib = 2 ** 30
    assert workloads.load("qwen3-0.6b").kv_bytes_per_token(16) * 32768 == 3.5 * gib
    assert workloads.load("qwen3-32b").kv_bytes_per_token(16) * 32768 == 8 * gib


def test_mla_caches_the_latent():
    ds = workloads.load("deepseek-v3")
    assert ds.is_mla and ds.kv_elements_per_token == 512 + 64
    assert ds.kv_bytes_per_token(16) == 61 * 576 * 2
    assert ds.n_dense_layers == 3 and ds.n_moe_layers == 58 and ds.shared_d_ff == 2048


def test_llama_shapes():
    m = workloads.load("llama-3-8b")
    assert (m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff, m.vocab_size) == \
        (32, 4096, 32, 8, 128, 14336, 128256)
    assert m.gqa_group == 4 and m.ffn_gated and not m.tied_embeddings


def test_gpt2_by_hand():
    # 124,439,808 = wte 50257*768 + wpe 1024*768 + 12 layers * 7,087,872 + ln_f 1536
    per_layer = 2 * 768 + (768 * 2304 + 2304) + (768 * 768 + 768) + 2 * 768 + (768 * 3072 + 3072) + (3072 * 768 + 768)
    assert per_layer == 7_087_872
    assert workloads.load("gpt2").param_count() == 50257 * 768 + 1024 * 768 + 12 * per_layer + 1536


def test_from_dict_and_path_agree(tmp_path):
    data = json.loads((workloads.CATALOG_DIR / "configs" / "qwen3-8b.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert ModelSpec.from_hf_config(data, name="x").param_count() == ModelSpec.from_hf_config(path).param_count()


def test_unknown_architecture_names_the_field():
    with pytest.raises(ModelError, match="model_type: unknown architecture 'bert'"):
        ModelSpec.from_hf_config({"model_type": "bert"})


def test_missing_field_is_named():
    data = json.loads((workloads.CATALOG_DIR / "configs" / "llama-3-8b.json").read_text())
    del data["num_hidden_layers"]
    with pytest.raises(ModelError, match="missing num_hidden_layers"):
        ModelSpec.from_hf_config(data, name="broken")


@pytest.mark.parametrize("value", [0, -4, 3.5, "32", True])
def test_bad_field_value_is_named(value):
    data = json.loads((workloads.CATALOG_DIR / "configs" / "llama-3-8b.json").read_text())
    data["num_hidden_layers"] = value
    with pytest.raises(ModelError, match="num_hidden_layers"):
        ModelSpec.from_hf_config(data, name="broken")


@pytest.mark.parametrize("value", [-128, 0.5, "128"])
def test_bad_value_head_width_is_named(value):
    data = json.loads((workloads.CATALOG_DIR / "configs" / "llama-3-8b.json").read_text())
    data["v_head_dim"] = value
    with pytest.raises(ModelError, match="v_head_dim"):
        ModelSpec.from_hf_config(data, name="broken")


def test_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        workloads.load(str(bad))
    with pytest.raises(ModelError, match="does not exist"):
        workloads.load(str(tmp_path / "none.json"))
    with pytest.raises(ModelError, match="unknown catalog model"):
        workloads.load("llama-9")


def test_heads_must_divide():
    data = json.loads((workloads.CATALOG_DIR / "configs" / "llama-3-8b.json").read_text())
    data["num_key_value_heads"] = 5
    with pytest.raises(ModelError, match="not a multiple"):
        ModelSpec.from_hf_config(data, name="x")
