"""Host-side tasks, one file per kind: each builds its model, data and jitted step from the config and
gives :func:`grpojax.train.runner.run` the :class:`grpojax.train.runner.Task` methods.

    SFTTask (sft), PreferenceTask (preference: DPO, IPO, GR-DPO / GR-IPO), RewardTask (reward),
    GRPOTask (grpo), PPOTask (ppo), OnlineDPOTask (online_dpo); BaseTask (base) holds what they share.
"""

from grpojax.train.tasks.base import BaseTask
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.online_dpo import OnlineDPOTask
from grpojax.train.tasks.ppo import PPOTask
from grpojax.train.tasks.preference import PreferenceTask
from grpojax.train.tasks.reward import RewardTask
from grpojax.train.tasks.sft import SFTTask

__all__ = ["BaseTask", "GRPOTask", "OnlineDPOTask", "PPOTask", "PreferenceTask", "RewardTask", "SFTTask"]
