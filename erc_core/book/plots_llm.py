"""Helpers and figures of the LLM-scale chapter (SmolLM2 or any HF causal LM trained with ERC-DAPO).

The numbers come from :func:`erc_core.rl.train.train` runs (``metrics.jsonl``, ``tokens.jsonl``, read with
:mod:`erc_core.book.runs`) and from one scoring pass of a real model; the figures are built without pyplot, like
:mod:`erc_core.book.plots`.

::

    ent, texts = response_entropies_by_precision(model, tok, prompts)   # (N,) entropies per precision
    outside_band_share(ent, bounds=(0.95, 1.05))             # share each precision would gate on numerics
    fig_precision_ratio(ent, bounds=(0.95, 1.05))             # what numerics alone would gate
    logits_memory(responses=32, length=64, vocab=49152)       # MiB of the logits of one micro-batch
    fig_llm_run({"DAPO + ERC": runs.read_metrics(run)})       # curves that stay readable for 1-3 steps
    fig_token_text(runs.read_tokens(run), pick_responses(runs.read_tokens(run)))

The figures follow the book's style (:mod:`erc_core.book.style`): book width, text >= 9 pt at the book's display width,
plain decimal ticks on log axes, and the book's colours (a run with the ERC gate in ``erc``, one without in
``base``, tokens kept / fell / rose as in chapters 1-3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from erc_core.band import Band
from erc_core.entropy import entropy_from_logits
from erc_core.losses import entropy_ratio, erc_mask

from .style import DPI, FIG_WIDTH, PALETTE, SEQUENCE, SERIES, TINTS, ratio_axis, styled

__all__ = ["PRECISIONS", "precision_entropies", "response_entropies_by_precision", "outside_band_share",
           "logits_memory", "fig_precision_ratio", "fig_llm_run", "pick_responses", "token_label", "fig_token_text",
           "PHASES", "seed_range", "fig_shipped_runs", "time_split"]

PRECISIONS = ("fp32 forward, fp32 entropy", "bf16 forward, fp32 entropy", "bf16 forward, bf16 entropy")


# ---------------------------------------------------------------------------------------------- numerics
def precision_entropies(logits_fp32: torch.Tensor, logits_bf16: torch.Tensor) -> dict[str, torch.Tensor]:
    """Full-vocabulary entropies of the same positions computed three ways (keys: ``PRECISIONS``).

    Args:
        logits_fp32: (N, V) logits of an fp32 forward (the reference).
        logits_bf16: (N, V) logits of the same positions from a bf16 (autocast) forward.

    Returns:
        A dict of ``(N,)`` float32 tensors keyed by ``PRECISIONS`` -- the reference; ``entropy_from_logits`` of
        the bf16 logits (fp32 arithmetic, what the trainer does under bf16 autocast); and the entropy computed in
        bf16 arithmetic throughout (``-(softmax * log_softmax).sum()`` on bf16 tensors), the shortcut the trainer
        avoids.
    """
    if logits_fp32.shape != logits_bf16.shape or logits_fp32.ndim != 2:
        raise ValueError(f"expected two (N, V) tensors of one shape, got {tuple(logits_fp32.shape)} and "
                         f"{tuple(logits_bf16.shape)}")
    zb = logits_bf16.to(torch.bfloat16)
    naive = -(zb.softmax(-1) * zb.log_softmax(-1)).sum(-1)
    return {PRECISIONS[0]: entropy_from_logits(logits_fp32.float()),
            PRECISIONS[1]: entropy_from_logits(zb),
            PRECISIONS[2]: naive.float()}


def response_entropies_by_precision(model, tokenizer, prompts: list[str], device: str = "cpu",
                                    max_new_tokens: int = 16) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Sample one response per prompt with the trainer's ``generate`` (temperature 1, full vocabulary), then score
    the response positions with an fp32 forward and a bf16-autocast forward (``forward_logits``, the trainer's
    forward) and return :func:`precision_entropies` of them, (N,) each over the N response tokens, and the
    decoded responses.

    Args:
        model, tokenizer: a causal LM on ``device`` and its tokenizer (left padding).
        prompts: the prompt texts (chat-formatted for an instruct model).
        device: "cpu" or "cuda".
        max_new_tokens: response length limit.
    """
    from erc_core.rl.models import forward_logits
    from erc_core.rl.train import generate

    gen = generate(model, tokenizer, prompts, max_new_tokens, temperature=1.0, device=device)
    rmask = gen.response_mask
    full_ids = torch.cat([gen.prompt_ids, gen.responses], 1)
    full_mask = torch.cat([gen.prompt_mask, rmask.long()], 1)
    keep = gen.responses.shape[1] + 1
    with torch.no_grad():
        z32 = forward_logits(model, full_ids, full_mask, logits_to_keep=keep)[:, :-1][rmask]
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            z16 = forward_logits(model, full_ids, full_mask, logits_to_keep=keep)[:, :-1][rmask]
    return precision_entropies(z32, z16), gen.texts


def outside_band_share(entropies: dict[str, torch.Tensor],
                       bounds: tuple[float, float] = (0.95, 1.05)) -> dict[str, float]:
    """For each entry of ``entropies`` (the reference first), the share of positions whose entropy ratio to the
    reference, ``(H + 1e-8) / (H_ref + 1e-8)``, leaves the open band: what ERC would gate on that difference alone
    (0 for the reference itself)."""
    ref = next(iter(entropies.values()))
    everywhere = torch.ones_like(ref, dtype=torch.bool)
    return {name: 1.0 - float(erc_mask(h, ref, everywhere, bounds).float().mean()) for name, h in entropies.items()}


def logits_memory(responses: int, length: int, vocab: int, chunk_size: int = 0) -> dict[str, float]:
    """MiB taken by the logits of ONE forward of ``responses`` x ``length`` tokens over a ``vocab`` vocabulary.

    Returns:
        dict with ``bf16 logits`` (what the LM head writes under bf16 autocast), ``one fp32 copy`` (one float32
        temporary of the same shape, what an unchunked fp32 entropy / log-softmax pass allocates at least once, and
        keeps for backward), and ``fp32 per chunk`` (the same for ``chunk_size`` rows; equal to the full copy
        when ``chunk_size`` is 0).
    """
    for name, v in (("responses", responses), ("length", length), ("vocab", vocab)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v!r}")
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0, got {chunk_size!r}")
    rows = responses * length
    mib = 2.0 ** 20
    chunk = min(chunk_size, rows) if chunk_size else rows
    return {"bf16 logits": rows * vocab * 2 / mib, "one fp32 copy": rows * vocab * 4 / mib,
            "fp32 per chunk": chunk * vocab * 4 / mib}


@styled
def fig_precision_ratio(entropies: dict[str, torch.Tensor], bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """Entropy ratio of each other precision to the first one (the reference), against the reference entropy,
    one panel per other precision (entropy on a log axis with plain decimal ticks).

    Args:
        entropies: ``{name: (N,) entropies}``, the reference first (e.g. :func:`precision_entropies`).
        bounds: the ERC band, shaded: points outside it are tokens the gate would stop on numerics alone if the
            old pass and the update used these two precisions (``fell`` colour below it, ``rose`` above).
    """
    names = list(entropies)
    if len(names) < 2:
        raise ValueError("need the reference and at least one other precision")
    ref_t = entropies[names[0]].detach().float().cpu()
    ref = ref_t.numpy()
    fig = Figure(figsize=(FIG_WIDTH, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names) - 1, sharey=True))
    band = Band.of(bounds, "bounds")
    kinds = ((0, PALETTE["kept"], "inside the band"), (1, PALETTE["fell"], "below: entropy lower"),
             (2, PALETTE["rose"], "above: entropy higher"))
    for ax, name in zip(axes, names[1:]):
        h = entropies[name].detach().float().cpu()
        rho = entropy_ratio(h, ref_t).numpy()
        kind = np.asarray(band.kind(rho))
        ax.axhspan(*bounds, color=PALETTE["erc"], alpha=0.15, lw=0)
        ax.axhline(1.0, color=PALETTE["old"], lw=0.8)
        for k, color, label in kinds:
            ax.scatter(ref[kind == k], rho[kind == k], s=9, color=color, alpha=0.75, label=label)
        ax.set(title=f"{name}\n{(kind > 0).mean():.0%} of {len(rho)} outside the band",
               xlabel="H, reference (nats)")
        ratio_axis(ax, "x")  # rho stays within a few percent of 1: a linear axis shows it best
    axes[0].set_ylabel("rho = H / H_reference")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False,
               markerscale=1.6)
    return fig


# ---------------------------------------------------------------------------------------------- run curves
_PANELS = (("reward_mean", "sampled reward"), ("eval_acc", "greedy eval accuracy"),
           ("entropy_mean", "entropy, old pass (nats)"), ("clipfrac", "share of tokens clipped / gated"),
           ("grad_norm", "grad norm (before clip)"), ("time", "seconds per step"))


def _run_colors(erc_on: dict[str, bool]) -> dict[str, str]:
    """Colour of each run: the first with the ERC gate ``erc``, the first without ``base`` (as in chapters 2, 5
    and 6); a further run of the same kind a :data:`erc_core.book.style.SERIES` colour (no meaning)."""
    out, used = {}, set()
    for i, (name, on) in enumerate(erc_on.items()):
        c = PALETTE["erc"] if on else PALETTE["base"]
        out[name] = c if c not in used else SERIES[i % len(SERIES)]
        used.add(c)
    return out


def _layer(i: int) -> dict:
    """The first run wide and light, the others narrow on top, so that coinciding curves all stay visible."""
    return {"lw": 3.4, "alpha": 0.55, "zorder": 2} if i == 0 else {"lw": 1.6, "alpha": 1.0, "zorder": 3 + i}


@styled
def fig_llm_run(runs: dict[str, pd.DataFrame]) -> Figure:
    """Training curves of one or more runs, readable for 1-3 steps (markers) as for hundreds (lines), in a 3 x 2
    grid.

    Panels: reward, eval accuracy, old-pass entropy, clip fractions (``erc_clipfrac`` solid, ``ppo_clipfrac``
    dashed; a run without ERC shows ``ratio_outside_frac``, what the gate WOULD have taken, dotted), gradient norm,
    and the time of one step split into generation, old pass and updates (first run).

    Args:
        runs: ``{name: erc_core.book.runs.read_metrics(...)}`` DataFrames indexed by step (step 0 = evaluation only).
    """
    if not runs:
        raise ValueError("runs is empty")
    fig = Figure(figsize=(FIG_WIDTH, 7.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(3, 2).ravel()
    n_max = max(int((df.index > 0).sum()) for df in runs.values())
    mk = dict(marker="o", ms=4) if n_max <= 30 else {}
    erc = {name: bool((df.loc[df.index > 0, "erc_clipfrac"].fillna(0) > 0).any())
           or not (df.loc[df.index > 0, "ratio_outside_frac"].fillna(0) > 0).any() for name, df in runs.items()}
    colors = _run_colors(erc)
    for i, (name, df) in enumerate(runs.items()):
        c, rl, lay = colors[name], df[df.index > 0], _layer(i)
        for ax, (key, title) in zip(axes, _PANELS):
            if key != "time":
                ax.set_title(title)
            if key == "eval_acc":
                s = df[key].dropna()
                ax.plot(s.index, s.values, color=c, marker="os^D"[i % 4], ms=5, label=name, **lay)
            elif key == "clipfrac":
                col, ls, lab = ("erc_clipfrac", "-", "ERC gated") if erc[name] else ("ratio_outside_frac", ":",
                                                                                     "ERC would gate")
                ax.plot(rl.index, rl[col], color=c, ls=ls, label=f"{name}: {lab}", **mk, **lay)
                ax.plot(rl.index, rl["ppo_clipfrac"], color=c, ls="--", label=f"{name}: PPO clipped", **mk, **lay)
            elif key == "time":
                if i == 0:
                    bottom = np.zeros(len(rl))
                    for part, pc in zip(PHASES, SEQUENCE):
                        ax.bar(rl.index, rl[part], bottom=bottom, color=pc, width=0.8,
                               label=part.removeprefix("time_"))
                        bottom += rl[part].to_numpy(float)
                    ax.set_title(f"seconds per step, {name}")
                    ax.set_ylim(0, 1.45 * max(float(bottom.max()), 1e-9))
                    ax.legend(loc="upper center", ncol=3, handlelength=1.0, columnspacing=0.8)
            else:
                ax.plot(rl.index, rl[key], color=c, label=name, **mk, **lay)
    for ax in axes[-2:]:
        ax.set_xlabel("RL step")
    handles = [Line2D([], [], color=colors[n], lw=2.0, label=n) for n in runs]
    handles += [Line2D([], [], color=PALETTE["ink"], ls=ls, lw=1.6, label=lab) for ls, lab in
                (("-", "ERC gated"), (":", "ERC would gate (run without ERC)"), ("--", "PPO clipped"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    for ax in axes:
        if n_max <= 10:
            ax.set_xticks(range(0 if ax is axes[1] else 1, n_max + 1))
    return fig


# ---------------------------------------------------------------------------------------------- tokens
def pick_responses(tokens: pd.DataFrame, n: int = 4,
                   bounds: tuple[float, float] = (0.95, 1.05)) -> list[tuple[int, int]]:
    """``n`` logged (step, response) pairs to show token by token: from the LAST logged step (the most trained
    policy), the responses with the most tokens outside the ERC band first (ties: the first logged).

    Args:
        tokens: an :func:`erc_core.book.runs.read_tokens` table.
    """
    if tokens.empty:
        return []
    last = tokens[tokens["step"] == tokens["step"].max()]
    out = Band.of(bounds, "bounds").gated(last["rho"])
    counts = out.groupby([last["step"], last["response"]], sort=False).sum()
    order = sorted(range(len(counts)), key=lambda i: (-int(counts.iloc[i]), i))
    return [(int(s), int(r)) for s, r in (counts.index[i] for i in order[:n])]


def token_label(token: str) -> str:
    """A token's text as one printable cell: newlines as a return sign, tabs as an arrow, empty as a middle dot."""
    text = token.replace("\n", "\u23ce").replace("\t", "\u2192")
    return text if text else "\u00b7"


@styled
def fig_token_text(tokens: pd.DataFrame, pairs: list[tuple[int, int]], bounds: tuple[float, float] = (0.95, 1.05),
                   width: int = 80) -> Figure:
    """The text of a few responses, token by token, each token on a background saying what the ERC band does.

    Light green: kept (``low < rho < high``); blue: gated, the entropy fell (``rho <= low``); red: gated, it
    rose (``rho >= high``) -- the ``kept`` / ``fell`` / ``rose`` colours of the book. Each response starts with a
    line giving its step, reward and advantage.

    Args:
        tokens: an :func:`erc_core.book.runs.read_tokens` table (``token``, ``rho``, ``step``, ``response``, ...).
        pairs: the (step, response) pairs to show, e.g. from :func:`pick_responses` (empty: a note says so).
        bounds: the ERC band.
        width: characters per line before wrapping (80 fit the book's width at 9 pt).
    """
    lines: list[list[tuple[str, int]]] = []  # (text, kind) cells; kind -1 = header text
    for step, resp in pairs:
        rows = tokens[(tokens["step"] == step) & (tokens["response"] == resp)].sort_values("t")
        if rows.empty:
            raise ValueError(f"no logged tokens for step {step}, response {resp}")
        head = rows.iloc[0]
        lines.append([(f"step {step}, response {resp}: reward {head['reward']:.0f}, "
                       f"advantage {head['advantage']:+.2f}", -1)])
        cur, col = [], 0
        for tok, rho in zip(rows["token"], rows["rho"]):
            label = token_label(str(tok))[:width]
            if col + len(label) > width and cur:
                lines.append(cur)
                cur, col = [], 0
            kind = int(Band.of(bounds, "bounds").kind(rho))
            cur.append((label, kind))
            col += len(label) + 1
        if cur:
            lines.append(cur)
    if not lines:
        lines.append([("no response was logged (every logged step had all advantages 0)", -1)])
    n = len(lines)
    fontsize = 9
    fig = Figure(figsize=(FIG_WIDTH, 0.35 + 0.25 * (n + 1)), dpi=DPI)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    char_w = 0.6 * fontsize / 72 / (FIG_WIDTH * 0.98)  # monospace advance as a fraction of the axes width
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.4, -1.6)  # one line on top for the legend
    ax.axis("off")
    face = {0: TINTS["kept"], 1: PALETTE["fell"], 2: PALETTE["rose"]}
    for y, cells in enumerate(lines):
        x = 0.0
        for text, kind in cells:
            style = (dict(color="black", fontweight="bold", family="sans-serif") if kind < 0 else
                     dict(family="monospace", color="white" if kind else "black",
                          bbox=dict(boxstyle="square,pad=0.12", fc=face[kind], ec="none")))
            ax.text(x, y, text, fontsize=fontsize, va="center", ha="left", **style)
            x += (len(text) + 1) * char_w
    ax.legend(handles=[Patch(color=face[0], label=f"kept: {bounds[0]} < rho < {bounds[1]}"),
                       Patch(color=face[1], label="gated: entropy fell"),
                       Patch(color=face[2], label="gated: entropy rose")],
              loc="upper right", frameon=False, ncol=3, borderaxespad=0.1, handlelength=1.2, columnspacing=1.0)
    return fig


# ---------------------------------------------------------------------------------------------- shipped runs
#: The time of one RL step, split by phase (columns of every step record of erc_core.rl.train).
PHASES = ("time_generate", "time_old", "time_update")


def seed_range(table: pd.DataFrame, variant: str, metric: str, smooth: int = 1) -> pd.DataFrame:
    """Per step (step 0 included where the metric has a value, e.g. ``eval_acc``): mean over the variant's seeds
    and the seeds' range (min, max), each run first smoothed by a centred rolling mean over ``smooth`` of its
    logged values. With 2 seeds a t-interval would be 12.7 standard errors wide; the range says plainly what the
    seeds did. Columns ``mean, low, high, n`` indexed by step.

    Args:
        table: a study table (:func:`erc_core.rl.study.collect` / ``load``): ``variant, seed, step, <metric>``.
    """
    if smooth < 1:
        raise ValueError(f"smooth must be an integer >= 1, got {smooth!r}")
    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of the table")
    rows = table[(table["variant"] == variant) & table[metric].notna()]
    if rows.empty:
        raise ValueError(f"variant {variant!r} has no values of {metric!r} in the table")
    wide = rows.pivot_table(index="step", columns="seed", values=metric).sort_index()
    wide = wide.apply(lambda s: s.dropna().rolling(smooth, center=True, min_periods=1).mean())
    return pd.DataFrame({"mean": wide.mean(axis=1), "low": wide.min(axis=1), "high": wide.max(axis=1),
                         "n": wide.notna().sum(axis=1)})


@styled
def fig_shipped_runs(table: pd.DataFrame, variants: dict[str, str], smooth: int = 3) -> Figure:
    """The shipped runs side by side in a 2 x 2 grid: held-out greedy accuracy (every eval), sampled reward,
    old-pass entropy (rolling mean over ``smooth`` steps) and the share of response tokens outside the ERC band
    (``erc_clipfrac`` for a run with ERC, where it is what the gate took; ``ratio_outside_frac``, what the gate
    WOULD have taken, for one without, dotted). Lines: the mean over seeds; shaded: the seeds' range. A variant
    with ERC takes the ``erc`` colour, one without the ``base`` colour.

    Args:
        table: a study table with ``variant, seed, step`` and the metrics of :func:`erc_core.rl.train.train`.
        variants: ``{variant name in the table: label}``, e.g. ``{"dapo": "DAPO", "dapo_erc": "DAPO + ERC"}``.
    """
    if not variants:
        raise ValueError("variants is empty")
    panels = [("eval_acc", "held-out greedy accuracy", 1), ("reward_mean", f"sampled reward ({smooth}-step mean)",
                                                            smooth),
              ("entropy_mean", f"entropy, nats ({smooth}-step mean)", smooth),
              ("outside", "tokens outside the band\n(gated if ERC)", 1)]
    fig = Figure(figsize=(FIG_WIDTH, 5.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    erc = {v: bool((table.loc[table["variant"] == v, "erc_clipfrac"].fillna(0) > 0).any()) for v in variants}
    colors = _run_colors(erc)
    for i, (variant, label) in enumerate(variants.items()):
        c, erc_on, lay = colors[variant], erc[variant], _layer(i)
        for ax, (metric, title, sm) in zip(axes, panels):
            col = ("erc_clipfrac" if erc_on else "ratio_outside_frac") if metric == "outside" else metric
            b = seed_range(table, variant, col, sm)
            ax.plot(b.index, b["mean"], color=c, marker="os^D"[i % 4] if metric == "eval_acc" else None, ms=5,
                    ls="-" if metric != "outside" or erc_on else ":",
                    label=label if metric != "outside" else f"{label}: {'gated' if erc_on else 'would gate'}",
                    **lay)
            ax.fill_between(b.index, b["low"], b["high"], color=c, alpha=0.18, lw=0)
            ax.set_title(title)
    for ax in axes[2:]:
        ax.set_xlabel("RL step")
    axes[0].legend()
    axes[3].legend()
    return fig


def time_split(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: RL steps, mean seconds per step, the shares of generation / old pass / updates in it, response
    tokens per second (response tokens of the step / its time), eval seconds (all evals) and wall time.

    Args:
        table: a study table (``run_id, variant, seed, step`` and the time columns of erc_core.rl.train).
    """
    missing = [c for c in (*PHASES, "time_step", "tokens_per_s", "time_total") if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the columns {missing}")
    rows = []
    for run_id, g in table.groupby("run_id", sort=True):
        rl = g[g["step"] >= 1]
        total = float(rl["time_step"].sum())
        rows.append(dict(run_id=run_id, variant=g["variant"].iloc[0], seed=int(g["seed"].iloc[0]), steps=len(rl),
                         s_per_step=total / max(len(rl), 1),
                         **{f"share_{p.removeprefix('time_')}": float(rl[p].sum()) / total for p in PHASES},
                         tokens_per_s=float(rl["tokens_per_s"].mean()),
                         eval_s=float(g["time_eval"].sum()) if "time_eval" in g else float("nan"),
                         wall_s=float(g["time_total"].max())))
    return pd.DataFrame(rows).set_index("run_id")
