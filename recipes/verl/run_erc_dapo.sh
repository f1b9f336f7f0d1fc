#!/usr/bin/env bash
# ERC-DAPO with verl 0.9.1 on one node of 8 GPUs (documented, not run in this repository's CI).
# Prerequisites (recipes/verl/README.md): verl 0.9.1 installed with its own dependencies (vllm, ray, ...),
# erc_core importable on every node (pip install -e <this repo> --no-deps), and the trainer patch applied:
#   cd "$(python -c 'import os, verl; print(os.path.dirname(os.path.dirname(verl.__file__)))')" \
#     && patch -p1 < /path/to/recipes/verl/verl-0.9.1-erc-old-entropy.patch
# Override any value from the command line, e.g. `bash run_erc_dapo.sh trainer.nnodes=2`.
# Where this differs from the official ERC scripts (model, data, batch, NLL term, dynamic sampling): README.md.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
TRAIN=${TRAIN:-$HOME/data/dapo-math-17k.parquet}
VAL=${VAL:-$HOME/data/aime-2024.parquet}
LOSS=${LOSS:-erc_dapo}            # erc_gppo: GPPO base loss (then set CLIP_HIGH=0.2; the official GPPO+ERC script
                                  # keeps the band 0.95/1.05)
CLIP_LOW=${CLIP_LOW:-0.2}
CLIP_HIGH=${CLIP_HIGH:-0.28}      # DAPO clip-higher
ERC_LOW=${ERC_LOW:-0.95}
ERC_HIGH=${ERC_HIGH:-1.05}

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    data.train_files="$TRAIN" \
    data.val_files="$VAL" \
    data.prompt_key=prompt \
    data.train_batch_size=512 \
    data.max_prompt_length=2048 \
    data.max_response_length=8192 \
    data.truncation=left \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.external_lib=erc_core.integrations.verl \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS" \
    actor_rollout_ref.actor.clip_ratio_low="$CLIP_LOW" \
    actor_rollout_ref.actor.clip_ratio_high="$CLIP_HIGH" \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    +actor_rollout_ref.actor.erc_low="$ERC_LOW" \
    +actor_rollout_ref.actor.erc_high="$ERC_HIGH" \
    actor_rollout_ref.actor.calculate_entropy=True \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_epochs=1 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=20480 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.optim.weight_decay=0.1 \
    actor_rollout_ref.actor.grad_clip=1.0 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=16 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.top_p=1.0 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=20480 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.logger='["console","wandb"]' \
    trainer.project_name=erc \
    trainer.experiment_name="${LOSS}-${ERC_LOW}-${ERC_HIGH}" \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.total_epochs=10 \
    "$@"
