"""Training: the TrainState pytree, optimizers, and pure jitted steps ``(state, batch, rng) -> (state, metrics)``.

    TrainState, create_train_state, split_model, merge_model     grpojax.train.steps.state
    make_optimizer, make_schedule, Plateau                      grpojax.train.steps.optim
    accumulate, apply_gradients                                  grpojax.train.steps.accumulate
    completion_logprobs, sequence_inputs                         grpojax.train.steps.forward
    grpo_step, GRPOSettings                                      grpojax.train.steps.grpo
    sft_step                                                     grpojax.train.steps.sft
"""

from grpojax.train.steps.accumulate import accumulate, apply_gradients
from grpojax.train.steps.forward import CompletionLogprobs, completion_logprobs, sequence_inputs
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.optim import Plateau, make_optimizer, make_schedule
from grpojax.train.steps.sft import sft_step
from grpojax.train.steps.state import TrainState, create_train_state, merge_model, split_model

__all__ = [
    "TrainState", "create_train_state", "split_model", "merge_model", "make_optimizer",
    "make_schedule", "Plateau", "accumulate", "apply_gradients",
    "CompletionLogprobs", "completion_logprobs", "sequence_inputs", "GRPOSettings", "grpo_step",
    "sft_step",
]
