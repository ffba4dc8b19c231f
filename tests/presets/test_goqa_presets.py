"""The GlobalOpinionQA presets agree with each other and with ALGORITHMS.md 2.3 / 2.5.

SFT -> IPO / GR-IPO is one experiment: the preference presets start from (and use as reference) the SFT
preset's export, so they must read it with the same tokenizer and end token, the same split of the one
table (``data.shuffle_seed``) and the same sequence layout. The 7B / 14B GR-IPO presets need their own
SFT presets (the same memory layout as the GR-IPO run of that size). "The paper's settings" include the
halving of eta_alpha at each LR-on-plateau cut. (The runtime side -- the tokenizers these presets load
actually have the same end id -- is ``test_presets_chain.py::test_goqa_chain_shares_tokenizer``.)
"""

import glob
import os

import pytest

from grpojax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = {"0.5b": "0.5B", "7b": "7B", "14b": "14B"}


def _cfg(name):
    return load_config(os.path.join(ROOT, "configs", name))


def _preference_presets():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "goqa_*ipo_*.yaml")))


def test_every_goqa_preference_preset_has_its_sft_preset():
    names = _preference_presets()
    assert {"goqa_ipo_qwen2.5-0.5b.yaml", *(f"goqa_gr_ipo_qwen2.5-{s}.yaml" for s in SIZES)} <= set(names)
    for name in names:
        size = name.rsplit("_qwen2.5-", 1)[1][: -len(".yaml")]
        assert os.path.isfile(os.path.join(ROOT, "configs", f"goqa_sft_qwen2.5-{size}.yaml")), name


@pytest.mark.parametrize("name", _preference_presets())
def test_preference_preset_reads_its_sft_with_the_same_tokenizer_and_data(name):
    size = name.rsplit("_qwen2.5-", 1)[1][: -len(".yaml")]
    sft, dpo = _cfg(f"goqa_sft_qwen2.5-{size}.yaml"), _cfg(name)
    assert sft.kind == "sft" and dpo.kind == "dpo"
    assert dpo.model.path == dpo.model.ref_path == sft.export_hf == f"runs/goqa_sft_qwen2.5-{size}/hf"
    # the tokenizer: the one the SFT export saved (tokenizer.path unset) or the very one the SFT used
    assert dpo.tokenizer.path in (None, sft.tokenizer_path), (dpo.tokenizer.path, sft.tokenizer_path)
    assert dpo.tokenizer.chat_template == sft.tokenizer.chat_template is False
    assert dpo.tokenizer.system_prompt == sft.tokenizer.system_prompt
    for key in ("format", "path", "name", "split", "eval_split", "shuffle_seed", "max_prompt_length",
                "max_length"):
        assert getattr(dpo.data, key) == getattr(sft.data, key), key


@pytest.mark.parametrize("size", sorted(SIZES))
def test_sft_preset_starts_from_the_base_model_in_the_gr_ipo_memory_layout(size):
    sft, gr = _cfg(f"goqa_sft_qwen2.5-{size}.yaml"), _cfg(f"goqa_gr_ipo_qwen2.5-{size}.yaml")
    assert sft.model.path == f"Qwen/Qwen2.5-{SIZES[size]}" and sft.tokenizer.path is None
    assert sft.export_hf == f"runs/goqa_sft_qwen2.5-{size}/hf"
    assert sft.model.lora == gr.model.lora
    for key in ("dtype", "param_dtype", "remat", "scan_layers"):
        assert getattr(sft.model, key) == getattr(gr.model, key), key
    assert sft.mesh == gr.mesh
    assert sft.train.batch_size == gr.train.batch_size == 16


@pytest.mark.parametrize("size", sorted(SIZES))
def test_gr_ipo_presets_follow_the_paper(size):
    """ALGORITHMS.md 2.5 settings, and 2.3: eta_alpha is halved at each LR drop on plateau."""
    cfg = _cfg(f"goqa_gr_ipo_qwen2.5-{size}.yaml")
    p = cfg.preference
    assert (p.loss, p.beta, p.eta_alpha, p.chi) == ("gr_ipo", 0.01, 5e-7, 1.0)
    assert p.eta_alpha_decay_on_lr_cut == 0.5
    assert cfg.train.plateau.enabled and cfg.train.plateau.factor == 0.1
    assert cfg.train.learning_rate == 6e-5 and cfg.train.batch_size == 16
    assert (cfg.model.lora.rank, cfg.model.lora.alpha) == (8, 32.0)
    ipo = _cfg("goqa_ipo_qwen2.5-0.5b.yaml")
    assert (ipo.preference.loss, ipo.preference.beta, ipo.train.learning_rate) == ("ipo", 0.01, 3e-5)
