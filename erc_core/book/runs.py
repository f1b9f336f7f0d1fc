"""Reading training runs back for the book: metrics and per-token tables, gate summaries, one replayed step.

:func:`erc_core.rl.train.train` writes ``metrics.jsonl`` (one record per RL step) and ``tokens.jsonl`` (per-token
records of a few responses every ``log_tokens_every`` steps) into its output folder. The chapters read them
with :func:`read_metrics` / :func:`read_tokens` and summarise them with :func:`gate_summary` /
:func:`compare_runs`. :func:`replay_step` runs ONE more RL step from a run's final checkpoint with the trainer's
own functions and records the policy (log-probs and entropies of every sampled token) before each mini-batch
update, which is what a chapter needs to show gradients, PPO ratios and the ERC gate together.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from erc_core.band import Band
from erc_core.rl.study import tokens_table

__all__ = ["read_metrics", "read_tokens", "gate_summary", "compare_runs", "StepTrace", "replay_step", "gradient_flow",
           "hardware", "start_chapter"]


def _run_file(run_dir: str | os.PathLike, name: str) -> Path:
    path = Path(run_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"run_dir {str(run_dir)!r} has no {name} (is it an erc_core.rl.train output folder?)")
    return path


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``metrics.jsonl`` of a run as a DataFrame indexed by ``step`` (step 0 = evaluation after the warm start).

    Columns missing at a step (``eval_acc`` between evaluations, every RL statistic at step 0) are NaN.
    """
    df = pd.read_json(_run_file(run_dir, "metrics.jsonl"), lines=True)
    return df.set_index("step").sort_index()


def read_tokens(run_dir: str | os.PathLike, steps: list[int] | None = None) -> pd.DataFrame:
    """``tokens.jsonl`` of a run as a DataFrame, one row per logged response token.

    Columns: step, response, t, token, old_entropy, entropy, rho (the entropy ratio), outside_band,
    gated (outside the band AND the run used ERC), advantage, reward. ``steps``: keep only these RL steps.
    """
    path = _run_file(run_dir, "tokens.jsonl")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: train with log_tokens_every >= 1 and at least that many steps")
    df = tokens_table(path)
    if steps is not None:
        df = df[df["step"].isin(list(steps))].reset_index(drop=True)
    return df


def gate_summary(tokens: pd.DataFrame, bounds: tuple[float, float] = (0.95, 1.05)) -> dict:
    """Counts and mean old entropies of the tokens an ERC band keeps and gates, from the ``rho`` column.

    Args:
        tokens: a :func:`read_tokens` table (at least ``rho`` and ``old_entropy``).
        bounds: the ERC band (low, high); a token is gated when ``rho <= low`` or ``rho >= high``.

    Returns:
        dict with n_tokens, n_gated, n_gated_low (entropy fell), n_gated_high (rose), gated_frac, and
        mean_old_entropy_{gated,kept,gated_low,gated_high} (NaN when the group is empty).
    """
    band = Band.of(bounds, "bounds")
    rho, h = tokens["rho"].to_numpy(float), tokens["old_entropy"].to_numpy(float)
    lo, hi = band.fell(rho), band.rose(rho)
    gated = lo | hi

    def mean(sel: np.ndarray) -> float:
        return float(h[sel].mean()) if sel.any() else float("nan")

    return dict(n_tokens=int(len(rho)), n_gated=int(gated.sum()), n_gated_low=int(lo.sum()),
                n_gated_high=int(hi.sum()), gated_frac=float(gated.mean()) if len(rho) else 0.0,
                mean_old_entropy_gated=mean(gated), mean_old_entropy_kept=mean(~gated),
                mean_old_entropy_gated_low=mean(lo), mean_old_entropy_gated_high=mean(hi))


def compare_runs(runs: dict[str, pd.DataFrame], keys: list[str], last: int = 10) -> pd.DataFrame:
    """One row per run: the mean of each metric over its first and last ``last`` RL steps.

    Args:
        runs: ``{name: read_metrics(...)}``.
        keys: metric columns, e.g. ``["reward_mean", "entropy_mean", "erc_clipfrac"]``; ``eval_acc`` is
            reported at step 0 and at the last evaluated step instead.
        last: window size in RL steps (>= 1).
    """
    if last < 1:
        raise ValueError(f"last must be an integer >= 1, got {last!r}")
    rows = {}
    for name, df in runs.items():
        rl = df[df.index > 0]
        row = {}
        for k in keys:
            if k == "eval_acc":
                ev = df["eval_acc"].dropna()
                row["eval_acc first"], row["eval_acc last"] = float(ev.iloc[0]), float(ev.iloc[-1])
            else:
                row[f"{k} first"] = float(rl[k].head(last).mean())
                row[f"{k} last"] = float(rl[k].tail(last).mean())
        rows[name] = row
    return pd.DataFrame(rows).T


@dataclass
class StepTrace:
    """The policy seen by each mini-batch update of one replayed RL step. U = number of updates (+1: after the
    last one), b = responses kept by dynamic sampling, R = response length."""

    step: int                      # the RL step that was replayed
    logp: torch.Tensor             # (U + 1, b, R) sampled-token log-probs before update u (u = U: after the last)
    entropy: torch.Tensor          # (U + 1, b, R) full-vocabulary entropies, same positions
    old_logp: torch.Tensor         # (b, R) the rollout (old) policy's log-probs
    old_entropy: torch.Tensor      # (b, R) the rollout policy's entropies
    advantages: torch.Tensor       # (b,) GRPO advantages
    response_mask: torch.Tensor    # (b, R) bool
    tokens: list[list[str]]        # b lists of R decoded tokens ("" on padding)
    updated: torch.Tensor          # (U, b) bool: response i was in the mini-batch of update u
    stats: list[dict]              # U dicts: the trainer's statistics of each update (erc_clipfrac, ...)


def replay_step(run_dir: str | os.PathLike) -> StepTrace:
    """Run one more RL step (``checkpoint step + 1``) of a finished run, exactly as ``train`` would, and record
    the log-probs and entropies of all its responses before each mini-batch update and after the last one.

    Uses the run's ``config.yaml`` and ``checkpoint.pt``; the run folder is not modified.
    """
    from erc_core.rl import train as T
    from erc_core.rl.config import load_config

    cfg = load_config(_run_file(run_dir, "config.yaml"), {"progress": False})
    run = T.setup(cfg, checkpoint=_run_file(run_dir, "checkpoint.pt"))
    logps, ents, updated, stats = [], [], [], []

    @torch.no_grad()
    def snapshot(ro, mini: list[torch.Tensor] | None = None) -> None:
        """The current policy's log-probs and entropies of every kept response (and which ones ``mini`` updates)."""
        kept = ro.keep.nonzero().squeeze(-1)
        logp, ent = T.score_tokens(cfg, run.model, ro, kept)
        logps.append(logp.float().cpu())
        ents.append(ent.float().cpu())
        if mini is not None:
            updated.append(torch.isin(kept, torch.cat(mini)))

    ro = T.rl_step(run, run.step + 1, T.Hooks(before_update=snapshot, after_update=stats.append)).rollout
    snapshot(ro)
    kept = ro.keep.nonzero().squeeze(-1)
    mask = ro.response_mask[kept].cpu()
    tokens = [[run.tok.decode([int(x)]) if m else "" for x, m in zip(ro.responses[i], mask[j])]
              for j, i in enumerate(kept.tolist())]
    return StepTrace(step=run.step, logp=torch.stack(logps), entropy=torch.stack(ents),
                     old_logp=ro.old_logp[kept].float().cpu(), old_entropy=ro.old_entropy[kept].float().cpu(),
                     advantages=ro.advantages[kept].float().cpu(), response_mask=mask, tokens=tokens,
                     updated=torch.stack(updated) if updated else torch.zeros(0, len(kept), dtype=torch.bool),
                     stats=stats)


def hardware() -> dict:
    """What the numbers were measured on: torch version, device name, CPU threads, Python, platform."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (platform.processor() or "cpu")
    return dict(torch=torch.__version__, device=device, cuda=torch.cuda.is_available(),
                threads=torch.get_num_threads(), cpus=os.cpu_count(), python=platform.python_version(),
                platform=platform.platform(terse=True))


def start_chapter(seed: int, device: str, out_dir: str | os.PathLike | None, prefix: str) -> tuple[Path, dict]:
    """What a training chapter does first: seed torch, pick the folder of its runs, print the seed and the machine.

    Returns ``(out, hw)``: ``Path(out_dir)``, or a fresh temporary folder whose name starts with ``prefix`` when
    ``out_dir`` is None; and :func:`hardware`'s dict.
    """
    torch.manual_seed(seed)
    out = Path(out_dir or tempfile.mkdtemp(prefix=prefix))
    hw = hardware()
    print(f"seed {seed} | torch {hw['torch']} | device {device} ({hw['device']}) | "
          f"{hw['threads']} threads on {hw['cpus']} CPUs | Python {hw['python']}")
    return out, hw


def gradient_flow(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor,
                  entropy: torch.Tensor, old_entropy: torch.Tensor, erc_bounds: tuple[float, float],
                  clip: tuple[float, float], mode: str = "dapo", clip_c: float = 10.0) -> dict[str, torch.Tensor]:
    """Which tokens send policy gradient under an ERC band and a PPO clip range, read off autograd.

    ``policy_loss`` is evaluated twice, with and without the ERC gate, and each token's gradient with respect to
    its log-prob is inspected. Tokens with a zero advantage never send gradient and are in no category.

    Args:
        logp, old_logp, entropy, old_entropy: (B, T) as for :func:`erc_core.losses.policy_loss`.
        advantages: (B,) or (B, T). response_mask: (B, T) bool.
        erc_bounds: (low, high) ERC band. clip: (clip_low, clip_high). mode, clip_c: as in ``policy_loss``.

    Returns:
        A dict of ``(B, T)`` bool tensors ``grad`` (sends gradient with ERC), ``erc_gated`` (only ERC stopped it),
        ``ppo_clipped`` (only the clip stopped it), ``both`` (stopped by both), ``active`` (response token with
        A != 0); ``advantage`` (B, T); ``grad_erc`` / ``grad_ppo`` (B, T) gradients with / without the gate.
    """
    from erc_core.losses import erc_mask, policy_loss

    mask = response_mask.bool()
    adv = advantages if advantages.shape == mask.shape else advantages[:, None].expand(mask.shape)
    grads = {}
    for name, bounds in (("grad_erc", erc_bounds), ("grad_ppo", None)):
        lp = logp.detach().clone().requires_grad_()
        loss, _ = policy_loss(lp, old_logp, adv, mask, entropy=entropy, old_entropy=old_entropy, mode=mode,
                              clip_low=clip[0], clip_high=clip[1], clip_c=clip_c, erc_bounds=bounds)
        grads[name] = torch.autograd.grad(loss, lp)[0]
    active = mask & (adv != 0)
    in_band = erc_mask(entropy, old_entropy, mask, erc_bounds)
    ppo_flows = grads["grad_ppo"] != 0
    return dict(grad=active & (grads["grad_erc"] != 0), erc_gated=active & ppo_flows & ~in_band,
                ppo_clipped=active & ~ppo_flows & in_band, both=active & ~ppo_flows & ~in_band, active=active,
                advantage=adv, **grads)
