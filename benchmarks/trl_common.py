"""What bench_trl.py and bench_cycle.py share: the CPU's name and a TRL GRPOTrainer configured like erc_core."""

from __future__ import annotations

import contextlib
import io
import platform


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
