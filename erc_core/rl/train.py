"""ERC-DAPO on a real causal LM, one readable loop (CleanRL / nanoGPT style).

Per RL step:

1. rollout: ``prompts_per_step`` prompts x ``group_size`` responses sampled at ``temperature`` (HF ``generate``);
2. rewards (rule-based), optional DAPO overlong shaping, GRPO advantages per group, optional dynamic sampling;
3. old pass (no grad): per-token log-probs and full-vocabulary fp32 entropies of the rollout policy, fixed for
   all updates of the step (+ reference log-probs when ``kl_coef > 0``);
4. ``updates_per_step = ppo_epochs x batch / mini_batch_size`` AdamW steps, each: ONE forward giving log-probs and
   entropies (``logprobs_and_entropy``), ``policy_loss`` (DAPO or GPPO clip, ERC gate when ``erc``), optional
   entropy-ratio penalty / entropy bonus / KL to the frozen start model / SFT on correct responses; grad clip.

The old pass and the update forwards see exactly the same tensors (same micro-batches, padding, position ids,
eval mode, dtype, temperature), so with one update per step the entropy ratio is exactly 1 and ERC gates nothing.

::

    python -m erc_core.rl.train --config configs/tiny_arith_erc.yaml --out runs/erc [--set steps=40] \
        [--resume|--overwrite]
    records = train("configs/tiny_arith_erc.yaml", "runs/erc", overrides={"steps": 40})

Outputs in ``out_dir``: ``metrics.jsonl`` (one record per step; step 0 = evaluation after the warm start),
``tokens.jsonl`` (per-token records for plots), ``checkpoint.pt`` (every ``save_every`` steps), ``config.yaml``,
``train.lock`` (held while a trainer writes the folder: one writer per run).

Reliability: ``resume=True`` continues bit-identically from the checkpoint and refuses a config that differs from
the run's ``config.yaml`` (except ``steps``, which extends or shortens the run); a folder that holds a run is
never wiped without ``overwrite=True``; checkpoints load with ``torch.load(weights_only=True)`` (data only, no
code); each step's records are appended in one write + fsync, and a torn last line (a kill mid-write) is dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm import tqdm
from transformers import GenerationConfig

from ..advantages import dynamic_sampling_mask, grpo_advantages, overlong_penalty
from ..entropy import logprobs_and_entropy
from ..losses import agg_loss, entropy_ratio, entropy_ratio_penalty, erc_mask, kl_penalty, policy_loss, stats_to_floats
from .config import Config, ConfigError, config_keys, load_config, parse_set
from .models import (NEUTRAL_PROCESSING, NEUTRAL_SAMPLING, char_tokenizer, encode_prompts, forward_logits,
                     load_pretrained, tiny_model, warm_start)
from .tasks import format_prompt, make_task

__all__ = ["CheckpointError", "RunLockedError", "Run", "setup", "Hooks", "StepResult", "rl_step", "Rollout",
           "Generation", "generate", "train", "main", "read_jsonl", "TIMING_KEYS", "STEP_METRICS"]

TIMING_KEYS = ("time_generate", "time_old", "time_update", "time_eval", "time_step", "time_total", "tokens_per_s",
               "time_warmstart")


# ============================================================================================ errors
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as plain data (tensors, numbers, strings): crafted, foreign or old."""


class RunLockedError(RuntimeError):
    """Another trainer holds the run folder's lock."""


# ============================================================================================ setup
def seed_everything(seed: int) -> None:
    """Seed python, numpy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_step(cfg: Config, step: int) -> np.random.Generator:
    """Reseed python, numpy and torch for RL step ``step`` from ``(seed, step)`` alone, so that a resumed run samples
    what an uninterrupted one would; returns the step's generator of training problems."""
    seed_everything(cfg.seed * 1_000_003 + step)
    return np.random.default_rng([cfg.seed, step])


def prompt_style(cfg: Config, tok) -> str:
    """``cfg.prompt_style`` with ``auto`` resolved: ``chat`` iff the tokenizer has a chat template, else ``plain``."""
    return cfg.prompt_style if cfg.prompt_style != "auto" else ("chat" if tok.chat_template else "plain")


def make_task_from(cfg: Config):
    if cfg.task == "arith":
        kw = dict(max_operand=cfg.arith_max_operand, ops=cfg.arith_ops, answer_prefix=cfg.answer_prefix)
    else:
        kw = dict(n_numbers=cfg.countdown_numbers, max_number=cfg.countdown_max_number)
    return make_task(cfg.task, eval_size=cfg.eval_size, strict=cfg.model == "tiny" or cfg.answer_prefix, **kw)


def build_model(cfg: Config, task):
    """(model, tokenizer) in eval mode on cfg.device, before any warm start."""
    if cfg.model == "tiny":
        tok = char_tokenizer(task.chars)
        model = tiny_model(tok, arch=cfg.tiny_arch, hidden=cfg.tiny_hidden, layers=cfg.tiny_layers,
                           heads=cfg.tiny_heads, seed=cfg.seed)
    else:
        model, tok = load_pretrained(cfg.model)
    return model.to(cfg.device).eval(), tok


def make_optimizer(cfg: Config, model):
    # foreach: the same arithmetic per tensor (bit-identical here), in a few batched calls instead of a Python loop
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                            foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    return opt, sched


def autocast(device: str):
    """bf16 autocast on cuda; a no-op context on cpu."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")


@dataclass
class Run:
    """Everything an RL step works on, built once by :func:`setup`."""

    cfg: Config
    task: object                          # an erc_core.rl.tasks task: sample(), reward(), eval_split
    model: torch.nn.Module                # the policy, in eval mode on cfg.device
    tok: object                           # its tokenizer (left padding)
    style: str                            # plain | chat: how prompts are formatted (prompt_style)
    ref_model: torch.nn.Module | None     # frozen copy of the model after the warm start (kl_coef > 0), else None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    step: int = 0                         # the last RL step done (the checkpoint's after a resume)
    time_total: float = 0.0               # wall seconds of the run before this process (the checkpoint's)
    warmstart_losses: list[float] = field(default_factory=list)   # the warm start's loss per supervised step
    time_warmstart: float = 0.0           # wall seconds of the warm start


def setup(cfg: Config, checkpoint: str | os.PathLike | None = None) -> Run:
    """Seed, task, model and tokenizer, prompt style; then the warm start (``cfg.warmstart_steps``, a fresh run) or
    nothing (``checkpoint`` given); the frozen reference model (``kl_coef > 0``), the optimizer and scheduler; and
    finally, with ``checkpoint``, the states of the model, reference model, optimizer, scheduler and RNGs from it."""
    seed_everything(cfg.seed)
    task = make_task_from(cfg)
    model, tok = build_model(cfg, task)
    losses, t0 = [], time.perf_counter()
    if checkpoint is None and cfg.warmstart_steps:
        losses = warm_start(model, tok, task, cfg.warmstart_steps, cfg.warmstart_batch, cfg.warmstart_lr, cfg.seed,
                            cfg.device)
    t_warm = time.perf_counter() - t0
    ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.kl_coef > 0 else None
    opt, sched = make_optimizer(cfg, model)
    run = Run(cfg, task, model, tok, prompt_style(cfg, tok), ref_model, opt, sched, warmstart_losses=losses,
              time_warmstart=t_warm)
    if checkpoint is not None:
        run.step, run.time_total = load_checkpoint(Path(checkpoint), model, ref_model, opt, sched)
    return run


# ============================================================================================ rollout
@dataclass
class Rollout:
    """One step's samples. B = prompts_per_step x group_size responses, P prompt, R response tokens."""

    input_ids: torch.Tensor        # (B, P + R) prompt (left-padded) + response (right-padded)
    attention_mask: torch.Tensor   # (B, P + R) 1 on prompt and response tokens up to and including <eos>
    responses: torch.Tensor        # (B, R) response token ids
    response_mask: torch.Tensor    # (B, R) bool, response tokens up to and including the first <eos>
    texts: list[str]               # B decoded responses
    rewards: torch.Tensor          # (B,) task rewards in {0, 1}
    scores: torch.Tensor           # (B,) rewards + overlong shaping
    advantages: torch.Tensor       # (B,) GRPO advantages (group-normalised scores)
    keep: torch.Tensor             # (B,) bool, responses kept by dynamic sampling
    truncated: torch.Tensor        # (B,) bool, no <eos> within max_new_tokens
    old_logp: torch.Tensor | None = None     # (B, R) float32, the rollout policy's log-probs (old_pass)
    old_entropy: torch.Tensor | None = None  # (B, R) float32, its full-vocabulary entropies (old_pass)
    ref_logp: torch.Tensor | None = None     # (B, R) float32, the reference model's log-probs (old_pass, kl_coef > 0)
    first_forward: tuple | None = None  # old_pass(keep_graph=True): its first forward, with graph, for update()


def generation_config(tok, max_new_tokens: int, temperature: float, greedy: bool = False) -> GenerationConfig:
    """Sampling from the FULL temperature-scaled distribution, which the old pass scores: every field that could
    reshape it is set to its neutral value here, since ``generate`` fills unset fields from the model's own
    ``generation_config`` (see :data:`erc_core.rl.models.NEUTRAL_SAMPLING`)."""
    common = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if greedy:
        return GenerationConfig(do_sample=False, **common, **NEUTRAL_PROCESSING)
    return GenerationConfig(do_sample=True, temperature=temperature, **common, **NEUTRAL_SAMPLING)


def response_mask_from(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, R) ids -> (B, R) bool: True up to and including the first <eos> (all True if there is none)."""
    is_eos = (responses == eos_id).long()
    return (is_eos.cumsum(-1) - is_eos) == 0


@dataclass
class Generation:
    """What :func:`generate` returns for B prompts: P prompt tokens (left-padded), R response tokens."""

    prompt_ids: torch.Tensor       # (B, P) the tokenized prompts, left-padded
    prompt_mask: torch.Tensor      # (B, P) 1 on prompt tokens
    responses: torch.Tensor        # (B, R) sampled response ids (padded after <eos>)
    response_mask: torch.Tensor    # (B, R) bool, response tokens up to and including the first <eos>
    texts: list[str]               # B decoded responses (special tokens skipped)


@torch.no_grad()
def generate(model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 1.0, greedy: bool = False,
             device: str = "cpu") -> Generation:
    """Sample (or, ``greedy``, decode greedily) one response of at most ``max_new_tokens`` to each prompt from the
    full temperature-scaled distribution (bf16 autocast on cuda)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    unique = list(dict.fromkeys(prompts))  # a GRPO group repeats its prompt: tokenize each prompt once
    ids, mask = encode_prompts(tok, unique, device)
    if len(unique) < len(prompts):
        row = {p: i for i, p in enumerate(unique)}
        rows = torch.tensor([row[p] for p in prompts], device=ids.device)
        ids, mask = ids[rows], mask[rows]
    with autocast(device):
        out = model.generate(input_ids=ids, attention_mask=mask,
                             generation_config=generation_config(tok, max_new_tokens, temperature, greedy))
    responses = out[:, ids.shape[1]:]
    rmask = response_mask_from(responses, tok.eos_token_id)
    # the mask is a prefix of each row: decode the first n ids of each row; equal responses (frequent in a group)
    # once, all in one call
    seqs = [tuple(r[:n]) for r, n in zip(responses.tolist(), rmask.sum(-1).tolist())]
    distinct = list(dict.fromkeys(seqs))
    decoded = dict(zip(distinct, tok.batch_decode([list(q) for q in distinct], skip_special_tokens=True)))
    return Generation(ids, mask, responses, rmask, [decoded[q] for q in seqs])


def rollout(cfg: Config, model, tok, task, rng: np.random.Generator, style: str) -> Rollout:
    """Sample a group of responses for each of ``prompts_per_step`` fresh training problems and score them."""
    examples = task.sample(rng, cfg.prompts_per_step)
    prompts = [format_prompt(e, tok, style) for e in examples for _ in range(cfg.group_size)]
    gen = generate(model, tok, prompts, cfg.max_new_tokens, cfg.temperature, device=cfg.device)
    responses, rmask, texts = gen.responses, gen.response_mask, gen.texts
    exs = [e for e in examples for _ in range(cfg.group_size)]
    rewards = torch.tensor([task.reward(t, e) for t, e in zip(texts, exs)], dtype=torch.float32)
    lengths = rmask.sum(-1).cpu()
    truncated = ~(responses == tok.eos_token_id).any(-1).cpu()
    scores = rewards.clone()
    if cfg.overlong_buffer > 0:
        scores = scores + overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer,
                                           cfg.overlong_penalty_factor)
    groups = scores.view(cfg.prompts_per_step, cfg.group_size)
    advantages = grpo_advantages(groups).reshape(-1)
    keep_groups = dynamic_sampling_mask(groups) if cfg.dynamic_sampling else torch.ones(len(groups), dtype=torch.bool)
    keep = keep_groups.repeat_interleave(cfg.group_size)
    return Rollout(input_ids=torch.cat([gen.prompt_ids, responses], 1),
                   attention_mask=torch.cat([gen.prompt_mask, rmask.long()], 1), responses=responses,
                   response_mask=rmask, texts=texts, rewards=rewards, scores=scores, advantages=advantages, keep=keep,
                   truncated=truncated)


def partition(cfg: Config, keep: torch.Tensor) -> list[list[torch.Tensor]]:
    """Mini-batches of micro-batches of response indices (contiguous, no shuffle). Kept responses are split into
    ``batch_size / mini_batch_size`` mini-batches (fewer when dynamic sampling drops groups)."""
    idx = keep.nonzero().squeeze(-1)
    n_mini = cfg.batch_size // cfg.mini_batch_size
    minis = [m for m in torch.tensor_split(idx, n_mini) if len(m)]
    micro = cfg.micro_batch_size or cfg.mini_batch_size
    return [[m[i:i + micro] for i in range(0, len(m), micro)] for m in minis]


def score_tokens(cfg: Config, model, ro: Rollout, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and fp32 entropies (b, R) of the rollout's responses ``idx`` under ``model`` (grad if enabled).
    The ONE forward used by the old pass, the reference pass and the updates."""
    r = ro.responses.shape[1]
    dev = cfg.device
    width = ro.input_ids.shape[1]
    keep = torch.arange(width - r - 1, width - 1, device=dev)  # the positions predicting the responses: (b, R, V)
    with autocast(cfg.device):  # as an index, the LM head computes exactly these rows (no copy of a (b, R+1, V) slice)
        logits = forward_logits(model, ro.input_ids[idx].to(dev), ro.attention_mask[idx].to(dev),
                                logits_to_keep=keep)
    # no per-call value checks (host syncs): update() checks each micro-batch's loss, which any NaN reaches
    return logprobs_and_entropy(logits, ro.responses[idx].to(dev), temperature=cfg.temperature,
                                chunk_size=cfg.entropy_chunk_size or None, validate=False)


def _param_versions(model) -> list[int]:
    """In-place version counters of the model's parameters: they change with every optimizer step or load."""
    return [p._version for p in model.parameters()]


@torch.no_grad()
def old_pass(cfg: Config, model, ref_model, ro: Rollout, parts, keep_graph: bool = False) -> None:
    """Fill ``ro.old_logp``, ``ro.old_entropy`` (and ``ro.ref_logp``): (B, R) float32, on the update's micro-batches.

    ``keep_graph``: the first micro-batch's forward runs with autograd and is kept in ``ro.first_forward``; the
    first update (same weights, same inputs, so the same numbers) then reuses it instead of repeating it."""
    b, r = ro.responses.shape
    ro.old_logp, ro.old_entropy = torch.zeros(b, r, device=cfg.device), torch.zeros(b, r, device=cfg.device)
    ro.ref_logp = torch.zeros(b, r, device=cfg.device) if ref_model is not None else None
    ro.first_forward = None
    for mini in parts:
        for idx in mini:
            if keep_graph and ro.first_forward is None:
                with torch.enable_grad():
                    logp, ent = score_tokens(cfg, model, ro, idx)
                ro.first_forward = (model, idx, _param_versions(model), logp, ent)
                logp, ent = logp.detach(), ent.detach()
            else:
                logp, ent = score_tokens(cfg, model, ro, idx)
            ro.old_logp[idx], ro.old_entropy[idx] = logp, ent
            if ref_model is not None:
                ro.ref_logp[idx] = score_tokens(cfg, ref_model, ro, idx)[0]


# ============================================================================================ update
def mode_options(cfg: Config) -> dict:
    """The extra options of the covariance loss modes (their randomness uses the per-step seeded torch RNG)."""
    if cfg.loss_mode == "clip_cov":
        return dict(clip_cov_ratio=cfg.clip_cov_ratio, clip_cov_lb=cfg.clip_cov_lb, clip_cov_ub=cfg.clip_cov_ub)
    if cfg.loss_mode == "kl_cov":
        return dict(kl_cov_ratio=cfg.kl_cov_ratio, ppo_kl_coef=cfg.ppo_kl_coef)
    return {}


def take_first_forward(model, ro: Rollout, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (logp, entropy) (b, R) with graph that ``old_pass(keep_graph=True)`` kept, if they are for ``model``,
    micro-batch ``idx`` and the current weights (else None); used at most once."""
    kept, ro.first_forward = ro.first_forward, None
    if kept is None or not torch.is_grad_enabled():
        return None
    kept_model, kept_idx, versions, logp, ent = kept
    same_input = kept_idx is idx or torch.equal(kept_idx, idx)
    return (logp, ent) if kept_model is model and same_input and versions == _param_versions(model) else None


def micro_loss(cfg: Config, model, ro: Rollout, idx: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Total loss of one micro-batch (scalar), its stats (floats, read back in one host sync), and the current
    entropies (b, R) detached."""
    logp, ent = take_first_forward(model, ro, idx) or score_tokens(cfg, model, ro, idx)
    mask = ro.response_mask[idx].to(cfg.device)
    old_ent = ro.old_entropy[idx]
    adv = ro.advantages[idx].to(cfg.device)
    loss, stats = policy_loss(logp, ro.old_logp[idx], adv, mask, entropy=ent, old_entropy=old_ent,
                              mode=cfg.loss_mode, clip_low=cfg.clip_low, clip_high=cfg.clip_high, clip_c=cfg.clip_c,
                              erc_bounds=(cfg.erc_low, cfg.erc_high) if cfg.erc else None, agg=cfg.agg,
                              mode_options=mode_options(cfg), validate=False, stats_as_tensors=True)
    outside = ~erc_mask(ent, old_ent, mask, (cfg.erc_low, cfg.erc_high)) & mask
    stats["ratio_outside_frac"] = outside.sum() / mask.sum().clamp(min=1)  # would-be gated, ERC on or off
    stats["pg_loss"] = loss.detach()
    if cfg.entropy_penalty_coef > 0:
        loss = loss + entropy_ratio_penalty(ent, old_ent, mask, (cfg.entropy_penalty_low, cfg.entropy_penalty_high),
                                            cfg.entropy_penalty_coef)
    if cfg.entropy_coef > 0:
        loss = loss - cfg.entropy_coef * agg_loss(ent, mask, cfg.agg)
    if cfg.kl_coef > 0:
        kl = agg_loss(kl_penalty(logp, ro.ref_logp[idx], cfg.kl_type), mask, cfg.agg)
        loss = loss + cfg.kl_coef * kl
        stats["kl_ref"] = kl.detach()
    if cfg.sft_coef > 0:
        correct = mask & (ro.rewards[idx].to(cfg.device) > 0)[:, None]
        loss = loss - cfg.sft_coef * agg_loss(logp, correct, "token-mean")
    stats["loss"] = loss.detach()
    stats = stats_to_floats(stats)
    if not math.isfinite(stats["loss"]):
        raise FloatingPointError(f"the loss is {stats['loss']} (pg_loss {stats['pg_loss']}): the policy's logits, the "
                                 "old log-probs / entropies or the advantages hold NaN or inf")
    return loss, stats, ent.detach()


LOSS_VALUED_KEYS = ("loss", "pg_loss", "kl_ref")  # micro_loss stats that are loss values (weighted as the loss);
# every other micro_loss stat is a mean over the micro-batch's response tokens


def clip_gradients(model, max_norm: float) -> dict[str, float]:
    """Clip the gradients' total 2-norm to ``max_norm`` (``clip_grad_norm_``). Returns ``grad_norm`` (before the
    clip), ``grad_norm_clipped`` (after it: what the optimizer receives) and ``grad_clip_frac`` (1.0 when the clip
    scaled the gradients, i.e. ``grad_norm + 1e-6 > max_norm`` as in torch, else 0.0)."""
    pre = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True))
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    post = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0
    return {"grad_norm": pre, "grad_norm_clipped": post, "grad_clip_frac": float(pre + 1e-6 > max_norm)}


@dataclass
class Hooks:
    """Optional callbacks of :func:`rl_step` around each optimizer update of the step."""

    #: called before each update with the rollout and the update's mini-batch (its micro-batches of response indices)
    before_update: Callable[[Rollout, list[torch.Tensor]], None] | None = None
    #: called after each update with its statistics (the per-update values the step record averages)
    after_update: Callable[[dict], None] | None = None


def update(cfg: Config, model, opt, ro: Rollout, parts, hooks: Hooks | None = None) -> tuple[dict, torch.Tensor]:
    """``ppo_epochs`` passes of one AdamW step per mini-batch. Returns stats averaged over updates (plus the last
    update's erc_clipfrac) and the entropies (B, R) each response had in its last forward."""
    hooks = hooks or Hooks()
    last_ent = ro.old_entropy.clone()
    history: list[dict] = []
    resp_tokens = ro.response_mask.sum(-1).tolist()  # (B,) ints, read once per step
    n_tokens = [[sum(resp_tokens[i] for i in idx.tolist()) for idx in mini] for mini in parts]
    for _ in range(cfg.ppo_epochs):
        for mini, mini_tokens in zip(parts, n_tokens):
            if hooks.before_update:
                hooks.before_update(ro, mini)
            opt.zero_grad(set_to_none=True)
            n_tok = sum(mini_tokens)
            merged: dict[str, float] = {}
            for idx, idx_tokens in zip(mini, mini_tokens):
                # token-mean over the whole mini-batch: weight each micro-batch by its share of tokens
                w = idx_tokens / max(n_tok, 1) if cfg.agg == "token-mean" else len(idx) / sum(map(len, mini))
                loss, stats, ent = micro_loss(cfg, model, ro, idx)
                (loss * w).backward()
                last_ent[idx] = ent
                # per-token stats are means over the mini-batch's response tokens whatever agg weights the loss
                w_tok = idx_tokens / max(n_tok, 1)
                for k, v in stats.items():
                    merged[k] = merged.get(k, 0.0) + (w if k in LOSS_VALUED_KEYS else w_tok) * v
            merged.update(clip_gradients(model, cfg.grad_clip))
            opt.step()
            history.append(merged)
            if hooks.after_update:
                hooks.after_update(dict(merged))
    out = {k: float(np.mean([h[k] for h in history])) for k in history[0]} if history else {}
    if history:
        out["erc_clipfrac_last"] = history[-1]["erc_clipfrac"]
    out["updates"] = len(history)
    return out, last_ent


# ============================================================================================ one RL step
@dataclass
class StepResult:
    """What :func:`rl_step` returns."""

    record: dict                   # the step's metrics record (without evaluation and time_total)
    rollout: Rollout               # the step's samples, with the old pass filled in
    last_entropy: torch.Tensor     # (B, R) the entropies each response had in its last forward of the step


def rl_step(run: Run, step: int, hooks: Hooks | None = None,
            clock: Callable[[], float] = time.perf_counter) -> StepResult:
    """RL step ``step`` of ``run``: reseed from ``(seed, step)``, rollout (sample, reward, advantages), old pass,
    ``updates_per_step`` optimizer updates, one scheduler step. The record holds the rollout metrics, the
    learning rate of the next step, the update statistics and the seconds of each phase by ``clock``."""
    cfg = run.cfg
    rng = seed_step(cfg, step)
    t0 = clock()
    ro = rollout(cfg, run.model, run.tok, run.task, rng, run.style)
    t1 = clock()
    parts = partition(cfg, ro.keep)
    old_pass(cfg, run.model, run.ref_model, ro, parts, keep_graph=True)
    t2 = clock()
    stats, last_ent = update(cfg, run.model, run.opt, ro, parts, hooks)
    with warnings.catch_warnings():  # a step whose groups were all dropped has no optimizer step
        warnings.simplefilter("ignore", UserWarning)
        run.sched.step()
    t3 = clock()
    run.step = step
    rec = dict(step=step, **rollout_metrics(ro), lr=run.opt.param_groups[0]["lr"],
               updates_per_step=cfg.updates_per_step, **stats)
    rec.update(time_generate=t1 - t0, time_old=t2 - t1, time_update=t3 - t2, time_step=t3 - t0,
               tokens_per_s=float(ro.response_mask.sum()) / (t3 - t0))
    return StepResult(rec, ro, last_ent)


# ============================================================================================ eval, logging
STEP_METRICS = {
    "reward_mean": "task reward, mean over all B sampled responses (kept by dynamic sampling or not)",
    "score_mean": "reward + overlong shaping, mean over all B sampled responses",
    "kept_frac": "share of the B sampled responses kept by dynamic sampling (1.0 without it)",
    "entropy_mean": "old-pass full-vocabulary entropy, mean over the response tokens of the KEPT responses (the "
                    "tokens the updates train on; absent when dynamic sampling dropped every group)",
    "response_len": "response tokens (up to and including <eos>), mean over all B sampled responses",
    "truncated_frac": "share of all B sampled responses without <eos> within max_new_tokens",
    "grad_norm": "total gradient 2-norm BEFORE the clip, mean over the step's updates",
    "grad_norm_clipped": "total gradient 2-norm AFTER the clip (what AdamW receives), mean over the step's updates",
    "grad_clip_frac": "share of the step's updates in which the gradient clip scaled the gradients",
    "per-token loss stats": "ppo_clipfrac, ppo_clipfrac_lower, ppo_kl, erc_clipfrac(_low/_high), entropy_ratio_mean, "
                            "ratio_outside_frac, cov_clipfrac, cov_klfrac (dppo_*: ppo_clipfrac = share outside the "
                            "trust region): per update the mean over that mini-batch's response tokens, then the mean "
                            "over the step's updates",
    "erc_clipfrac_last": "erc_clipfrac of the step's last update only",
    "loss, pg_loss, kl_ref": "loss values of the step's updates (aggregated with agg), mean over updates",
}
"""Every metric of a step record and the set it averages over (``metrics.jsonl``, step >= 1)."""


def rollout_metrics(ro: Rollout) -> dict[str, float]:
    """The step record's rollout metrics, each a mean over exactly the set :data:`STEP_METRICS` names for it.

    ``entropy_mean`` covers the response tokens of kept responses only: the old pass scores only those (the dropped
    responses' ``old_entropy`` rows stay 0), so a mean over all responses would mix in zeros."""
    m = ro.response_mask
    kept_tokens = (m & ro.keep[:, None]).to(ro.old_entropy.device)
    out = dict(reward_mean=float(ro.rewards.mean()), score_mean=float(ro.scores.mean()),
               kept_frac=float(ro.keep.float().mean()))
    if bool(kept_tokens.any()):
        out["entropy_mean"] = float(ro.old_entropy[kept_tokens].mean())
    out.update(response_len=float(m.sum(-1).float().mean()), truncated_frac=float(ro.truncated.float().mean()))
    return out


@torch.no_grad()
def evaluate(cfg: Config, model, tok, task, style: str, batch: int = 256) -> float:
    """Greedy accuracy on the held-out eval split."""
    exs = task.eval_split
    hits = []
    for i in range(0, len(exs), batch):
        chunk = exs[i:i + batch]
        texts = generate(model, tok, [format_prompt(e, tok, style) for e in chunk], cfg.max_new_tokens,
                         cfg.temperature, greedy=True, device=cfg.device).texts
        hits += [task.reward(t, e) for t, e in zip(texts, chunk)]
    return float(np.mean(hits))


def token_records(cfg: Config, tok, ro: Rollout, last_ent: torch.Tensor, step: int) -> list[dict]:
    """Per-token records of a few responses with A != 0, taken from the last mini-batches first (the most
    off-policy ones)."""
    order = [int(i) for mini in reversed(partition(cfg, ro.keep)) for idx in mini for i in idx]
    cand = [i for i in order if ro.advantages[i] != 0]
    recs = []
    for i in cand[:cfg.log_tokens_responses]:
        # the gate's own functions on the same float32 tensors, so a record says exactly what the gate did
        old_h, h = ro.old_entropy[i].float().cpu(), last_ent[i].float().cpu()
        rho = entropy_ratio(h, old_h)
        out_band = ~erc_mask(h, old_h, torch.ones_like(h, dtype=torch.bool), (cfg.erc_low, cfg.erc_high))
        for t in range(int(ro.response_mask[i].sum())):
            outside = bool(out_band[t])
            recs.append(dict(step=step, response=i, t=t, token=tok.decode([int(ro.responses[i, t])]),
                             old_entropy=float(old_h[t]), entropy=float(h[t]), rho=float(rho[t]),
                             outside_band=outside,
                             gated=outside and cfg.erc, advantage=float(ro.advantages[i]),
                             reward=float(ro.rewards[i])))
    return recs


def _append_jsonl(path: Path, records: list[dict], sync: bool = True) -> None:
    """Append one step's records in ONE write (a kill leaves at most a torn last line), then fsync if ``sync``
    (the trainer syncs before each checkpoint, so what a checkpoint covers is on disk; about 5 ms per fsync)."""
    block = memoryview("".join(json.dumps(r) + "\n" for r in records).encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while block:
            block = block[os.write(fd, block):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _jsonl_lines(path: Path) -> list[tuple[str, dict]]:
    """``(line, record)`` of every line of a JSON-lines file. A torn tail (a last line without its newline, or an
    undecodable last line: a kill mid-append) is dropped with a warning; a bad line before it raises ValueError
    naming the file and the line number."""
    lines = Path(path).read_bytes().decode("utf-8", errors="replace").split("\n")
    tail = lines.pop()  # the text after the last newline: "" unless the last append was cut short
    out = []
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            out.append((ln, json.loads(ln)))
        except json.JSONDecodeError as e:
            if i == len(lines) and not tail.strip():
                tail = ln
                break
            raise ValueError(f"{path}, line {i}: not a JSON record ({e.msg}); only a torn last line is dropped, "
                             "this one is in the middle of the file") from None
    if tail.strip():
        warnings.warn(f"{path}: dropped a torn last line ({len(tail)} characters, a run killed mid-write)",
                      RuntimeWarning, stacklevel=3)
    return out


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only records with step <= max_step (after a resume), dropping a torn tail; rewritten atomically."""
    if path.exists():
        keep = [ln for ln, rec in _jsonl_lines(path) if rec["step"] <= max_step]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (``metrics.jsonl``, ``tokens.jsonl``), without a torn last line."""
    return [rec for _, rec in _jsonl_lines(Path(path))]


# ============================================================================================ checkpoints
def rng_state() -> dict:
    """The python, numpy (legacy global) and torch RNG states as tensors and plain types, so that a checkpoint
    loads with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return dict(python=dict(version=int(version), state=[int(x) for x in mt], gauss=gauss),
                numpy=dict(name=str(name), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), cached_gaussian=float(cached)),
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def set_rng_state(rng: dict) -> None:
    """Restore the states of :func:`rng_state`."""
    p, n = rng["python"], rng["numpy"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(path: Path, step: int, model, ref_model, opt, sched, time_total: float) -> None:
    """Model, optimizer, scheduler, RNG states and step, written atomically (tmp file + os.replace); tensors and
    plain types only, so :func:`load_checkpoint` reads it as data."""
    state = dict(step=step, model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                 ref_model=ref_model.state_dict() if ref_model is not None else None, time_total=time_total,
                 rng=rng_state())
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, ref_model, opt, sched) -> tuple[int, float]:
    """Restore a :func:`save_checkpoint` file into the given objects; returns ``(step, time_total)``.

    Loaded with ``weights_only=True``: tensors and plain types only, never code. Raises :class:`CheckpointError`
    for anything else (a crafted file, another program's checkpoint, or one written by an erc_core before 2026-12
    that pickled numpy RNG states)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(
            f"{path} is not a checkpoint of plain data (tensors, numbers, strings), so it was NOT loaded: "
            f"erc_core loads checkpoints with torch.load(weights_only=True) and never runs code from them. It may "
            f"be crafted, come from another program, or predate this format; delete it (or the run folder) to "
            f"start over. torch said: {first}") from None
    model.load_state_dict(state["model"])
    if ref_model is not None:
        ref_model.load_state_dict(state["ref_model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["step"], state["time_total"]


# ============================================================================================ the run folder
RUN_FILES = ("config.yaml", "metrics.jsonl", "tokens.jsonl", "checkpoint.pt")
RESUME_MAY_CHANGE = ("steps", "progress")  # extend / shorten a run; the tqdm bar


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on ``out/train.lock`` (``fcntl.flock``; released when the process dies) for the
    duration; a second holder fails at once with :class:`RunLockedError`. No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(out / "train.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"{out} is in use: another trainer holds {out / 'train.lock'}; wait for it to "
                                 "finish or choose another output folder") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def config_changes(cfg: Config, run_config: Path) -> list[str]:
    """Keys whose value in ``cfg`` differs from the run's ``config.yaml`` (keys the file lacks count with their
    default), except :data:`RESUME_MAY_CHANGE`."""
    try:
        old = yaml.safe_load(run_config.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{run_config} is not valid YAML: {e}") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{run_config} must hold a mapping of config keys")
    new, default = dataclasses.asdict(cfg), dataclasses.asdict(Config())
    return sorted(k for k in set(old) | set(new) if k not in RESUME_MAY_CHANGE
                  and old.get(k, default.get(k)) != new.get(k, default.get(k)))


def _check_run_folder(cfg: Config, out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what would silently mix or wipe runs: a resume whose config differs from the run's, or a fresh
    start over a folder holding a run without ``overwrite``."""
    if resume and (out / "config.yaml").exists():
        changed = config_changes(cfg, out / "config.yaml")
        if changed:
            old = yaml.safe_load((out / "config.yaml").read_text())
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {getattr(cfg, k, None)!r}" for k in changed)
            raise ConfigError(f"--resume with a config that differs from the run's {out / 'config.yaml'} in "
                              f"config key(s) {changed} ({detail}); resume with the run's config (only 'steps' "
                              "may change, to extend a run), or start a new run in another folder")
    if not resume and not overwrite:
        present = [n for n in RUN_FILES if (out / n).exists()]
        if present:
            raise ConfigError(f"{out} already holds a run ({', '.join(present)}): pass resume=True (--resume) to "
                              "continue it, or overwrite=True (--overwrite) to delete it and start again")


def _write_config(out: Path, cfg: Config) -> None:
    """``out/config.yaml``: the resolved config, written atomically."""
    tmp = out / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    os.replace(tmp, out / "config.yaml")


# ============================================================================================ the loop
def train(config: Config | dict | str | os.PathLike, out_dir: str | os.PathLike, resume: bool = False,
          overrides: dict | None = None, stop_at: int | None = None, overwrite: bool = False) -> list[dict]:
    """Run (or resume) RL training; returns all metric records (also in ``out_dir/metrics.jsonl``).

    ``resume``: continue from ``out_dir/checkpoint.pt`` if it exists, with the run's config (a differing key is a
    ConfigError naming it; only ``steps`` may change, to extend the run). ``overwrite``: delete the run already in
    ``out_dir`` and start again (without it, a folder holding a run is refused). ``stop_at``: return after that
    step (with a checkpoint), as if the run had been interrupted there; ``resume=True`` then continues to
    ``steps``. One trainer per folder: a second one raises :class:`RunLockedError` at once."""
    if resume and overwrite:
        raise ConfigError("resume (--resume) continues the run in out_dir and overwrite (--overwrite) deletes it: "
                          "pass one of them")
    cfg = load_config(config, overrides)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' = 'cuda' is invalid: no CUDA device is available (allowed: 'cpu')")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        _check_run_folder(cfg, out, resume, overwrite)
        threads = torch.get_num_threads()
        if cfg.num_threads:  # tiny models on a shared CPU: 1 thread avoids OpenMP oversubscription stalls
            torch.set_num_threads(cfg.num_threads)
        try:
            return _train(cfg, out, resume, stop_at)
        finally:
            torch.set_num_threads(threads)


def _train(cfg: Config, out_dir: str | os.PathLike, resume: bool, stop_at: int | None) -> list[dict]:
    """The body of :func:`train` on a validated config."""
    out = Path(out_dir)
    metrics_path, tokens_path, ckpt_path = out / "metrics.jsonl", out / "tokens.jsonl", out / "checkpoint.pt"
    t_start = time.perf_counter()
    if resume and ckpt_path.exists():
        run = setup(cfg, checkpoint=ckpt_path)
        if cfg.steps < run.step:
            raise ConfigError(f"config key 'steps' = {cfg.steps} is invalid: the checkpoint is at step {run.step}; "
                              f"allowed steps >= {run.step}")
        _write_config(out, cfg)  # a resume may only change steps (and progress): record them
        _truncate_jsonl(metrics_path, run.step)
        _truncate_jsonl(tokens_path, run.step)
    else:
        for p in (metrics_path, tokens_path, ckpt_path):
            p.unlink(missing_ok=True)
        _write_config(out, cfg)
        run = setup(cfg)
        ws = run.warmstart_losses
        rec = dict(step=0, eval_acc=evaluate(cfg, run.model, run.tok, run.task, run.style),
                   warmstart_loss=ws[-1] if ws else None, time_warmstart=run.time_warmstart,
                   torch_threads=torch.get_num_threads())
        rec["time_total"] = time.perf_counter() - t_start
        _append_jsonl(metrics_path, [rec])

    last = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    # disable=None: a bar only where stderr is a terminal (a log file or a notebook page would keep every refresh)
    bar = tqdm(range(run.step + 1, last + 1), desc=out.name, disable=None if cfg.progress else True,
               dynamic_ncols=True)
    for step in bar:
        res = rl_step(run, step)
        rec = res.record
        if step % cfg.eval_every == 0 or step == cfg.steps:
            te = time.perf_counter()
            rec["eval_acc"] = evaluate(cfg, run.model, run.tok, run.task, run.style)
            rec["time_eval"] = time.perf_counter() - te
        if cfg.log_tokens_every and step % cfg.log_tokens_every == 0:
            _append_jsonl(tokens_path, token_records(cfg, run.tok, res.rollout, res.last_entropy, step), sync=False)
        rec["time_total"] = run.time_total + time.perf_counter() - t_start
        save = bool(cfg.save_every and step % cfg.save_every == 0) or step == last
        if save and tokens_path.exists():
            _append_jsonl(tokens_path, [], sync=True)
        _append_jsonl(metrics_path, [rec], sync=save)
        bar.set_postfix(reward=f"{rec['reward_mean']:.2f}", erc=f"{rec.get('erc_clipfrac', 0):.3f}",
                        ent=f"{rec.get('entropy_mean', math.nan):.2f}")
        if save:
            save_checkpoint(ckpt_path, step, run.model, run.ref_model, run.opt, run.sched, rec["time_total"])
    return read_jsonl(metrics_path)


# ============================================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    keys = "\n".join(f"  {k} (default {d}): {c}" for k, d, c in config_keys())
    ap = argparse.ArgumentParser(prog="python -m erc_core.rl.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"config keys (--set KEY=VALUE, or in a YAML preset):\n{keys}")
    ap.add_argument("--config", required=True, help="YAML preset, e.g. configs/tiny_arith_erc.yaml")
    ap.add_argument("--out", required=True, help="output directory (metrics.jsonl, tokens.jsonl, checkpoint.pt)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config keys; with --resume only steps may differ from the run (--set steps=N "
                         "extends it)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from out/checkpoint.pt with the run's config (a differing key is refused)")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the run already in --out and start again (without it a non-empty run is refused)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = ap.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        if args.device:
            overrides["device"] = args.device
        cfg = load_config(args.config, overrides)
        records = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, CheckpointError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = records[-1]
    print(json.dumps({k: last[k] for k in ("step", "reward_mean", "eval_acc", "erc_clipfrac", "time_total")
                      if k in last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
