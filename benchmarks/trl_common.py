"""What bench_trl.py and bench_cycle.py share: their common options, TRL's trainer classes, the erc_core config
they compare on, TRL GRPOTrainers configured like it, and the CPU's name."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import platform
import tempfile
import warnings

import torch

from erc_core.rl.config import Config, load_config, parse_set


def add_common_args(ap: argparse.ArgumentParser, repeats: int, warmup: int) -> None:
    """The options both benchmarks take: --config, --set, --repeats, --warmup, --threads, --warm-start."""
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="erc_core config overrides")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed rounds (each runs every variant once)")
    ap.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0 = leave as is)")
    ap.add_argument("--warm-start", type=int, default=100, help="supervised steps first (tiny model only)")


def trl_classes() -> tuple[type, type, type, type]:
    """``(GRPOConfig, GRPOTrainer, ERCGRPOConfig, ERCGRPOTrainer)``; exits naming the [trl] extra without TRL."""
    try:
        from trl import GRPOConfig, GRPOTrainer

        from erc_core.integrations.trl import ERCGRPOConfig, ERCGRPOTrainer
    except ImportError as e:
        raise SystemExit(f"needs TRL (the [trl] extra): {e}")
    return GRPOConfig, GRPOTrainer, ERCGRPOConfig, ERCGRPOTrainer


def base_config(args: argparse.Namespace, **overrides) -> Config:
    """The erc_core config both sides run: ``--config`` without SFT term, warm start or progress bar, then
    ``overrides`` and ``--set``. Sets torch's threads to ``--threads`` first; exits unless the loss is the CPU DAPO
    token-mean loss without KL or entropy terms (what TRL is configured to match)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, {"sft_coef": 0.0, "warmstart_steps": 0, "progress": False, **overrides,
                                    **parse_set(args.set)})
    if cfg.device != "cpu" or cfg.loss_mode != "dapo" or cfg.agg != "token-mean" or cfg.kl_coef or cfg.entropy_coef:
        raise SystemExit("this benchmark compares the CPU DAPO token-mean loss without KL / entropy terms")
    return cfg


def trl_trainers(model, tok, prompts, reward, cfg: Config, prefix: str, **settings) -> dict:
    """``{"TRL GRPO": trl.GRPOTrainer, "TRL+ERC": ERCGRPOTrainer with cfg's ERC band}``, each on its own copy of
    ``model`` and set up by :func:`make_trl_trainer` (``settings``: TRL arguments), with TRL's and transformers'
    warnings and logs silenced; their output folders go to a fresh temporary folder ``prefix...``."""
    import transformers

    grpo_config, grpo_trainer, erc_config, erc_trainer = trl_classes()
    tmp = tempfile.mkdtemp(prefix=prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        logging.getLogger("trl").setLevel(logging.ERROR)
        return {
            "TRL GRPO": make_trl_trainer(grpo_trainer, grpo_config, copy.deepcopy(model), tok, prompts, reward, cfg,
                                         os.path.join(tmp, "grpo"), **settings),
            "TRL+ERC": make_trl_trainer(erc_trainer, erc_config, copy.deepcopy(model), tok, prompts, reward, cfg,
                                        os.path.join(tmp, "erc"), erc_low=cfg.erc_low, erc_high=cfg.erc_high,
                                        **settings),
        }


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_trl_trainer(cls, config_cls, model, tok, prompts, reward, cfg, out_dir, **settings):
    """A TRL trainer (``cls``, configured by ``config_cls``) set up like erc_core's ``cfg``: same learning rate,
    AdamW, grad clip, DAPO loss and clip range, no KL, CPU, fp32; ``settings`` add or override TRL arguments (batch
    size, updates per generation, sampling, ERC bounds). It is run for one step, so that its optimizer, accelerator
    state and buffered inputs exist."""
    from datasets import Dataset

    args = dict(
        output_dir=out_dir, num_generations=cfg.group_size, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, max_steps=1, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=cfg.grad_clip,
        lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", loss_type="dapo", epsilon=cfg.clip_low,
        epsilon_high=cfg.clip_high, beta=0.0, bf16=False, gradient_checkpointing=False, use_cpu=True, seed=cfg.seed,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
    args.update(settings)
    trainer = cls(model=model, reward_funcs=reward, args=config_cls(**args),
                  train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok)
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its log dicts when tqdm is off
        trainer.train()
    return trainer
