"""grpojax: JAX-native multi-objective GRPO and group-robust preference optimisation.

Subpackages (import the one you need, e.g. ``from grpojax import losses``):

- ``grpojax.losses``   pure loss functions of arrays (GRPO, DPO/IPO, group-robust weights, reward models)
- ``grpojax.rewards``  aggregation of multi-aspect reward scores into one reward
- ``grpojax.models``   Qwen2 / Qwen2.5 / Qwen3 in Flax NNX, HF import/export, LoRA, reward model
- ``grpojax.sampling`` KV-cache sampler (prefill + ``lax.while_loop`` decode)
"""

__version__ = "0.1.0"
