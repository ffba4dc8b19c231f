"""Pure jitted training steps ``(state, batch, rng) -> (state, metrics)`` and what they are built from.

    state        TrainState, create_train_state, split_model / merge_model
    optim        make_optimizer, make_schedule, Plateau
    accumulate   gradient accumulation over micro-batches, apply_gradients (non-finite steps skipped)
    forward      completion log-probs / entropies of a policy on prompt + completion batches
    sft, grpo, ppo, preference, reward   one step per method (a loss from grpojax.losses + accumulate)

Nothing here touches the host: no data loading, no sampling, no files. The tasks in
:mod:`grpojax.train.tasks` jit these with the mesh's shardings and feed them batches.
"""
