"""``load_reward_scorer`` on a HF sequence-classification directory scores like the model itself."""

import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax.cli import UserError
from grpojax.models import QwenConfig
from grpojax.models.reward_model import RewardModel, reward_model_to_hf
from grpojax.rollout.reward_scorer import load_reward_scorer
from grpojax.train.steps.forward import sequence_inputs

CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
PER_LAYER = types.SimpleNamespace(scan_layers=False)  # the run config's model section, as far as the scorer reads it


def test_hf_reward_model_scorer_matches_model(tmp_path):
    model = RewardModel(CFG, 3, rngs=nnx.Rngs(3), label_scale=[2.0, 1.0, 0.5], label_shift=[0.0, 1.0, -1.0])
    reward_model_to_hf(model, str(tmp_path / "rm"), pad_token_id=0)
    cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b", "c")), model=PER_LAYER)
    scorer = load_reward_scorer(str(tmp_path / "rm"), cfg, tok=None)
    batch = {"prompt_BQ": jnp.asarray([[0, 5, 6], [7, 8, 9]], jnp.int32),
             "prompt_mask_BQ": jnp.asarray([[0, 1, 1], [1, 1, 1]], jnp.int32),
             "completion_BC": jnp.asarray([[10, 11, 0], [12, 0, 0]], jnp.int32),
             "completion_mask_BC": jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.int32)}
    tokens, mask, positions = sequence_inputs(batch["prompt_BQ"], batch["prompt_mask_BQ"],
                                              batch["completion_BC"], batch["completion_mask_BC"])
    expected = model.to_label_space(model(tokens, mask, positions))
    np.testing.assert_allclose(np.asarray(scorer(batch)), np.asarray(expected), atol=1e-5)


def test_unknown_reward_model_path_is_a_user_error(tmp_path):
    cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a",)))
    with pytest.raises(UserError, match="neither a reward run_dir"):
        load_reward_scorer(str(tmp_path / "nothing"), cfg, tok=None)


@pytest.mark.parametrize("section", ["ppo", "online_dpo"])
def test_scorer_reads_the_aspects_of_its_own_section(tmp_path, section):
    """Regression: PPO / online-DPO configs have no ``grpo`` section (AttributeError on cfg.grpo)."""
    model = RewardModel(CFG, 2, rngs=nnx.Rngs(4))
    reward_model_to_hf(model, str(tmp_path / "rm"), pad_token_id=0)
    cfg = types.SimpleNamespace(**{section: types.SimpleNamespace(aspects=("a", "b"))}, model=PER_LAYER)
    scorer = load_reward_scorer(str(tmp_path / "rm"), cfg, tok=None, section=section)
    batch = {"prompt_BQ": jnp.asarray([[1, 2]], jnp.int32), "prompt_mask_BQ": jnp.asarray([[1, 1]], jnp.int32),
             "completion_BC": jnp.asarray([[3, 4]], jnp.int32),
             "completion_mask_BC": jnp.asarray([[1, 1]], jnp.int32)}
    assert np.asarray(scorer(batch)).shape == (1, 2)


def test_hf_reward_model_follows_the_run_layer_layout(tmp_path, monkeypatch):
    """A run with ``model.scan_layers: true`` loads the HF reward backbone stacked too, and scores the same."""
    import grpojax.models.reward_model as rm_mod

    model = RewardModel(CFG, 2, rngs=nnx.Rngs(6))
    reward_model_to_hf(model, str(tmp_path / "rm"), pad_token_id=0)
    loaded = []
    real = rm_mod.reward_model_from_hf

    def recording(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(rm_mod, "reward_model_from_hf", recording)
    batch = {"prompt_BQ": jnp.asarray([[0, 5, 6], [7, 8, 9]], jnp.int32),
             "prompt_mask_BQ": jnp.asarray([[0, 1, 1], [1, 1, 1]], jnp.int32),
             "completion_BC": jnp.asarray([[10, 11, 0], [12, 0, 0]], jnp.int32),
             "completion_mask_BC": jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.int32)}
    scores = {}
    for scan in (False, True):
        cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b")),
                                    model=types.SimpleNamespace(scan_layers=scan))
        scores[scan] = np.asarray(load_reward_scorer(str(tmp_path / "rm"), cfg, tok=None)(batch))
        assert loaded[-1].backbone.config.scan_layers is scan
    np.testing.assert_allclose(scores[True], scores[False], atol=1e-5)


def test_scorer_takes_samples_from_another_mesh(tmp_path):
    """The scorer lives on the training mesh (fsdp=4 here); rollouts may sample on another mesh of the same
    devices (``mesh.rollout_tensor``): its jitted forward takes the sampled batch from there (jit reshards
    the arguments) and scores it as the host batch."""
    import jax

    from grpojax import sharding as shd

    model = RewardModel(CFG, 2, rngs=nnx.Rngs(7))
    reward_model_to_hf(model, str(tmp_path / "rm"), pad_token_id=0)
    cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b")), model=PER_LAYER)
    train = shd.make_mesh({"fsdp": 4}, devices=jax.devices()[:4])
    scorer = load_reward_scorer(str(tmp_path / "rm"), cfg, tok=None, mesh=train)
    rng = np.random.default_rng(0)
    host = {"prompt_BQ": rng.integers(1, 64, (4, 3)).astype(np.int32), "prompt_mask_BQ": np.ones((4, 3), np.int32),
            "completion_BC": rng.integers(1, 64, (4, 2)).astype(np.int32),
            "completion_mask_BC": np.ones((4, 2), np.int32)}
    rollout = shd.rollout_mesh(train, 2)  # data=2 x tensor=2 over the same 4 devices
    sampled = shd.global_batch_from_full(host, rollout)
    assert sampled["prompt_BQ"].sharding.mesh is rollout
    np.testing.assert_allclose(np.asarray(scorer(sampled)), np.asarray(scorer(host)), atol=1e-6)


def test_reward_model_with_another_tokenizer_scores_its_own_tokenization(tmp_path):
    """Policy on the tiny Qwen-style tokenizer, reward model (HF dir) on a byte-level BPE with other ids and
    another chat format: the scorer re-tokenises the prompt + decoded completion texts with the reward
    model's tokenizer as reward training does (EOS only after an ended completion), and the scores are
    transformers' on those ids, one unpadded row at a time."""
    import os

    import torch
    from transformers import AutoModelForSequenceClassification

    from grpojax.data import load_tokenizer
    from grpojax.demo.tokenizer import train_tokenizer

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    policy = load_tokenizer(os.path.join(root, "configs/data/tiny_tokenizer"))
    prompts = ["How do I bake bread?", "Tell me a joke about cats."]
    answers = ["Start with flour and water.", "Cats sit on keyboards!", "No.", "Why did the cat nap all day"]
    bpe = train_tokenizer(prompts + answers + ["cats bread flour water keyboard"], vocab_size=300)
    rm_dir = str(tmp_path / "rm")
    rcfg = QwenConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    model = RewardModel(rcfg, 2, rngs=nnx.Rngs(9), label_scale=[2.0, 0.5], label_shift=[0.0, 1.0],
                        pad_token_id=bpe.pad_token_id)
    model.head_w[...] = model.head_w[...] * 30.0
    reward_model_to_hf(model, rm_dir, aspects=["a", "b"], meta={"chat_template": True, "system_prompt": None})
    bpe.save_pretrained(rm_dir)

    prompts_N = [p for p in prompts for _ in range(2)]
    pb = policy.prompt_batch(prompts_N, 24)
    comps = [policy.encode_response(a) + ([policy.eos_id] if i != 3 else []) for i, a in enumerate(answers)]
    L = 24
    comp = np.full((4, L), policy.pad_id, np.int32)
    comp_mask = np.zeros((4, L), np.int32)
    for i, c in enumerate(comps):
        comp[i, :len(c)], comp_mask[i, :len(c)] = c, 1
    texts = [policy.decode(c) for c in comps]
    batch = {"prompt_BQ": pb.prompt_ids_BT, "prompt_mask_BQ": pb.prompt_mask_BT, "completion_BC": comp,
             "completion_mask_BC": comp_mask}
    cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b")), model=PER_LAYER)
    scorer = load_reward_scorer(rm_dir, cfg, policy)
    assert scorer.retokenize
    got = np.asarray(scorer(batch, prompts_N, texts))

    rtok = load_tokenizer(rm_dir)
    hf = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    want = []
    for i, (p, t) in enumerate(zip(prompts_N, texts)):
        ids = rtok.encode_prompt(p) + rtok.encode_response(t) + ([rtok.eos_id] if i != 3 else [])
        assert max(ids) < 300 and rtok.format_prompt(p).startswith("<|user|>")
        with torch.no_grad():
            want.append(hf(torch.tensor([ids])).logits.numpy()[0])
    want = np.asarray(want) * [2.0, 0.5] + [0.0, 1.0]
    print(f"\n[reward other tokenizer] max |scorer - HF on its own ids| = {np.abs(got - want).max():.2e}")
    assert np.ptp(want[:, 0]) > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the policy's ids scored directly (what the scorer did before) are other sequences, some of them out
    # of this vocabulary (NaN scores on CPU)
    direct = np.asarray(load_reward_scorer(rm_dir, cfg, None)(batch))
    assert not np.allclose(direct, want, atol=1e-3)
    with pytest.raises(ValueError, match="texts"):
        scorer(batch)

    # without tokenizer files and with a smaller vocabulary there is nothing to tokenise the texts with
    bare = str(tmp_path / "bare")
    reward_model_to_hf(model, bare, aspects=["a", "b"])
    with pytest.raises(UserError, match="no tokenizer files.*tiny_tokenizer"):
        load_reward_scorer(bare, cfg, policy)


def test_hf_reward_model_takes_the_run_dtypes(tmp_path, monkeypatch):
    """A bf16 run (float32 param_dtype for its policy) loads the frozen HF reward model in bf16, not float32;
    scores stay close."""
    import grpojax.models.reward_model as rm_mod

    model = RewardModel(CFG, 2, rngs=nnx.Rngs(6))
    reward_model_to_hf(model, str(tmp_path / "rm"), pad_token_id=0)
    loaded, real = [], rm_mod.reward_model_from_hf
    monkeypatch.setattr(rm_mod, "reward_model_from_hf", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    batch = {"prompt_BQ": jnp.asarray([[0, 5, 6]], jnp.int32),
             "prompt_mask_BQ": jnp.asarray([[0, 1, 1]], jnp.int32),
             "completion_BC": jnp.asarray([[10, 11]], jnp.int32),
             "completion_mask_BC": jnp.asarray([[1, 1]], jnp.int32)}
    scores = {}
    for dt in ("float32", "bfloat16"):
        cfg = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b")),
                                    model=types.SimpleNamespace(scan_layers=False, dtype=dt, param_dtype="float32"))
        scores[dt] = np.asarray(load_reward_scorer(str(tmp_path / "rm"), cfg, tok=None)(batch))
        assert loaded[-1].head_w[...].dtype == jnp.dtype(dt)
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], atol=5e-2)
