"""Issue 20's bar: `moeplan model HF_ID --json` resolves each model by its HuggingFace id, and the parameter counts
it derives from the model's own config.json (catalogs/models/, via aiconfigurator-core 0.12.0) match the figures
its model card (or the source named beside it) states.

Tolerance: 2%, or half a unit of the last digit the card states where that is wider and the figure has two or more
significant digits ("17B" stands for 16.5B to 17.5B: the card's own rounding; a one-digit "1T" gets 2%). Cards count "active" three ways, each said beside its figure:
- all: every parameter a token touches, embedding table included (`active_params`);
- no input embedding: less the input embedding table, of which a token reads one row (`active_params_excluding_embedding`);
- non-embedding: less the embedding table and the LM head.
Totals exclude the MTP modules and vision towers unless said (DeepSeek's 685B includes its 14B MTP module).
"""

import json
import re

import pytest

import checkout_cli

# (HuggingFace id, total on the card, active on the card, active counted as, MTP in the total, source and notes)
CARDS = [
    ("moonshotai/Kimi-K2-Instruct", "1.04T", "32B", "no input embedding", False,
     "huggingface.co/moonshotai/Kimi-K2-Instruct model card, Model Summary: Total Parameters 1T, Activated 32B "
     "(mirrored at news.cgast.org/news/17259); the total to three digits, 1.04T, is the Kimi K2 report's (arXiv "
     "2507.20534, quoted at glennklockwood.com/garden/Kimi-K2.5). The card's 32B lies between the count without the input embedding "
     "(31.7B, checked here) and the count of all (32.86B, NVIDIA's figure for K2.5's identical text model, below)"),
    ("moonshotai/Kimi-K2.5", "1.04T", "32.86B", "all", False,
     "developer.nvidia.com/blog/build-with-kimi-k2-5-multimodal-vlm-using-nvidia-gpu-accelerated-endpoints: "
     "Total parameters 1T, Active parameters 32.86B; glennklockwood.com/garden/Kimi-K2.5: a 1.04T backbone plus "
     "the ~425M MoonViT vision tower, which is not counted here"),
    ("moonshotai/Kimi-K3", "2.8T", "104B", "no input embedding", False,
     "huggingface.co/moonshotai/collections lists moonshotai/Kimi-K3 at 2.8T; the active 104B is third-party "
     "(github.com/JustVugg/colibri docs/kimi_k3.md: '2.8T parameters, 104B active, 93 layers'): the search corpus "
     "held no official active figure. The vision tower is not counted"),
    ("deepseek-ai/DeepSeek-V3.2", "685B", "37B", "no input embedding", True,
     "huggingface.co/deepseek-ai/DeepSeek-V3.2: 685B (685.4B in its safetensors), which as for DeepSeek-V3 includes "
     "the MTP module; 37B activated as DeepSeek-V3's card states (V3.2 adds the DSA indexer, 0.85B over 61 layers)"),
    ("deepseek-ai/DeepSeek-V4-Pro", "1.6T", "49B", "all", False,
     "huggingface.co/deepseek-ai/DeepSeek-V4-Pro card (mirrored at theapplied.co/es/models/deepseek-ai-deepseek-v4-pro): "
     "'DeepSeek-V4-Pro with 1.6T parameters (49B activated)'"),
    ("openai/gpt-oss-120b", "116.8B", "5.13B", "no input embedding", False,
     "OpenAI gpt-oss model card: 116.83B total, 5.13B active per token (wikibench.ai/models/gpt-oss-120b: "
     "'116.8B-parameter ... activates 5.1B'); OpenAI counts the unembedding but not the input embedding as active"),
    ("zai-org/GLM-5", "744B", "40B", "non-embedding", False,
     "GLM-5 technical report (arXiv 2602.15763) table, quoted at glennklockwood.com/garden/GLM-5: 744B total, 40B "
     "activated; the 40B matches the count without the embedding table and LM head (39.9B)"),
    ("Qwen/Qwen3.5-397B-A17B", "397B", "17B", "all", False,
     "huggingface.co/Qwen/Qwen3.5-397B-A17B card (lmsysorg.mintlify.app/cookbook/llm/Qwen/Qwen3.5: '397B total "
     "parameters, 17B activated'); the ~0.4B vision tower is not counted, and the total lands 0.2% under the card"),
    ("MiniMaxAI/MiniMax-M2.5", "229.9B", "9.8B", "non-embedding", False,
     "MiniMax-M2.5 (www.emergentmind.com/topics/minimax-m2-5, citing MiniMax's report): 229.9B total, 9.8B "
     "activated per token; the card rounds to 230B / 10B"),
    ("Qwen/Qwen3-235B-A22B", "235B", "22B", "all", False,
     "huggingface.co/Qwen/Qwen3-235B-A22B card (b-lab.team mirror): 235B total, 22B activated, 234B non-embedding"),
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", "400B", "17B", "all", False,
     "Meta's Llama 4 announcement (ai.meta.com/blog/llama-4-multimodal-intelligence), restated by IBM "
     "(ibm.com/new/announcements/Meta-llama-4-maverick-and-llama-4-scout-now-available-in-watsonx-ai): 128 experts, "
     "400B total, 17B active; the vision tower is not in the config and not counted"),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "109B", "17B", "all", False,
     "the same announcement and IBM's: 16 experts, 109B total, 17B active; the count lands 1.1% under the card"),
    ("XiaomiMiMo/MiMo-V2-Flash", "309B", "15B", "all", False,
     "github.com/XiaomiMiMo/MiMo-V2-Flash README: 309B total and 15B active parameters; its 3-layer MTP module (0.33B "
     "per block) is not in the config and not counted"),
    ("Qwen/Qwen3-Coder-480B-A35B-Instruct", "480B", "35B", "all", False,
     "NVIDIA's NIM model card of Qwen/Qwen3-Coder-480B-A35B-Instruct (docs.api.nvidia.com/nim/reference/"
     "qwen-qwen3-coder-480b-a35b-instruct): '480B total parameters and 35B activated parameters'"),
    ("mistralai/Mixtral-8x22B-v0.1", "141B", "39B", "all", False,
     "Mistral AI's Mixtral 8x22B announcement (2024-04-17), as restated by the DAIR.AI prompt-engineering guide: "
     "'39B active parameters out of a total of 141B'"),
]

_UNITS = {"B": 1e9, "T": 1e12}


def _card(figure: str) -> tuple[float, float]:
    """The value a card states and the tolerance it carries: max(2%, half a unit of its last digit)."""
    number, unit = re.fullmatch(r"([\d.]+)([BT])", figure).groups()
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number) * _UNITS[unit]
    digits = len(number.replace(".", "").lstrip("0"))
    rounding = 0.5 * 10 ** -decimals * _UNITS[unit] if digits >= 2 else 0.0
    return value, max(0.02 * value, rounding)


def _active(summary: dict, convention: str) -> float:
    if convention == "all":
        return summary["active_params"]
    if convention == "no input embedding":
        return summary["active_params_excluding_embedding"]
    return summary["active_params_excluding_embedding"] - summary["params_by_part"]["lm_head"]


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cards")  # the CLI from anywhere: the HF id is not a path there
    out = {}
    for hf_id, *_ in CARDS:
        result = checkout_cli.run("model", hf_id, "--json", cwd=cwd)
        assert result.returncode == 0, result.stderr
        out[hf_id] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("hf_id,total,active,convention,with_mtp,source", CARDS, ids=[c[0] for c in CARDS])
def test_parameter_counts_match_the_model_card(summaries, hf_id, total, active, convention, with_mtp, source):
    s = summaries[hf_id]
    want_total, tol_total = _card(total)
    got_total = s["total_params"] + (s["mtp_params"] if with_mtp else 0)
    assert abs(got_total - want_total) <= tol_total, f"{hf_id}: total {got_total:.4g} vs card {total} ({source})"
    want_active, tol_active = _card(active)
    got_active = _active(s, convention)
    assert abs(got_active - want_active) <= tol_active, f"{hf_id}: active {got_active:.4g} vs card {active} ({source})"


def test_the_tolerance_is_the_cards_rounding_or_two_percent():
    assert _card("1T") == (1e12, 0.02e12)  # one digit: no rounding allowance past 2%
    assert _card("17B") == (17e9, 0.5e9)  # the card's rounding (2.9%) is wider than 2%
    assert _card("116.8B")[1] == pytest.approx(0.02 * 116.8e9)


def test_an_hf_id_and_the_catalog_name_give_the_same_model(summaries, tmp_path):
    by_name = json.loads(checkout_cli.run("model", "kimi-k3", "--json", cwd=tmp_path).stdout)
    assert by_name["total_params"] == summaries["moonshotai/Kimi-K3"]["total_params"]
    unknown = checkout_cli.run("model", "moonshotai/Kimi-K9", cwd=tmp_path)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "HuggingFace id" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1


def test_the_2026_architectures_are_read_from_their_configs(summaries):
    k3 = summaries["moonshotai/Kimi-K3"]
    assert (k3["attention"], k3["attention_layers"]) == ("mla+linear", {"full": 24, "linear": 69})
    assert (k3["experts"], k3["experts_per_token"], k3["shared_experts"], k3["latent_moe_size"]) == (896, 16, 2, 3584)
    assert k3["precision"]["routed_experts"] == "mxfp4" and k3["precision"]["attention"] == "bf16"
    oss = summaries["openai/gpt-oss-120b"]
    assert oss["attention_layers"] == {"full": 18, "sliding": 18} and oss["sliding_window_tokens"] == 128
    assert oss["precision"]["routed_experts"] == "mxfp4"
    assert summaries["Qwen/Qwen3.5-397B-A17B"]["attention_layers"] == {"full": 15, "linear": 45}
    assert summaries["deepseek-ai/DeepSeek-V3.2"]["attention"] == "mla+dsa"
    assert summaries["zai-org/GLM-5"]["attention"] == "mla+dsa"
    v4 = summaries["deepseek-ai/DeepSeek-V4-Pro"]
    assert (v4["attention"], v4["hash_routed_layers"], v4["mtp_layers"]) == ("compressed", 3, 1)


@pytest.mark.parametrize("spec", ["kimi-k3-gb200-nvl72.yaml", "kimi-k3-b200-8.yaml"])
def test_kimi_k3_plans_and_states_kv_and_linear_state_per_sequence(spec, tmp_path):
    """Issue 20's bar: `moeplan plan` on the Kimi K3 examples recommends a deployment and says what one sequence
    keeps on a device: its KV cache (24 MLA layers, growing with the context) and its linear-attention state
    (69 KDA layers, fixed), in the terminal, the summary and plan.json."""
    from hwmodels.arithmetic import kv_bytes_per_token, linear_state_bytes_per_sequence
    from hwmodels.units import format_bytes
    result = checkout_cli.run("plan", str(checkout_cli.ROOT / "catalogs" / "examples" / spec), "-o", str(tmp_path / "out"),
                              cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["feasible"] is True
    decode = plan["recommendation"]["decode"]["memory_per_device"]
    k3, _ = _k3()
    tp = plan["recommendation"]["decode"]["layout"]["attention_tp"]
    assert decode["linear_state_bytes_per_sequence"] == pytest.approx(linear_state_bytes_per_sequence(k3) / tp)
    assert decode["kv_bytes_per_sequence"] == pytest.approx(kv_bytes_per_token(k3, _k3()[1]) * decode["context_tokens"])
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert f"KV cache {format_bytes(decode['kv_bytes_per_sequence'])} per sequence" in text
    assert f"linear-attention state {format_bytes(decode['linear_state_bytes_per_sequence'])} per sequence" in text
    assert "linear-attention state" in (tmp_path / "out" / "summary.md").read_text()


def _k3():
    from hwmodels import catalog
    from hwmodels.precision import default_plan
    arch = catalog.load_model("moonshotai/Kimi-K3")
    return arch, default_plan(arch.quantization_config, arch.torch_dtype)
