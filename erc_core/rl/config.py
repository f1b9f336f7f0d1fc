"""The trainer's config: every knob of a run, its validation, and YAML presets with ``base:`` inheritance.

::

    cfg = load_config("configs/tiny_arith_erc.yaml", {"steps": 40})   # a validated Config
    overrides = parse_set(["lr=1e-3", "erc=true"])                      # the CLI's --set

A bad value raises :class:`ConfigError` naming the key and the allowed values, before any compute.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..band import check_band
from ..checks import ParamError
from ..losses import AGG_MODES, KL_KINDS, POLICY_LOSSES, check_clip, check_clip_cov, check_kl_cov
from .tasks import TASKS, check_arith, check_countdown

__all__ = ["Config", "ConfigError", "config_keys", "load_config", "parse_set", "problem_space"]


class ConfigError(ValueError):
    """A bad config value; the message names the key and what is allowed."""


#: Most responses per RL step (prompts_per_step x group_size): beyond it a step cannot fit in memory anyway.
MAX_BATCH = 2 ** 16
#: Seeds are in [0, MAX_SEED): each step reseeds torch with seed * 1_000_003 + step, which must fit in 64 bits.
MAX_SEED = 2 ** 32


@dataclass
class Config:
    """Every knob of a run. ``configs/base.yaml`` lists the same defaults; presets are short diffs of it."""

    # run
    seed: int = 0                        # model init, warm start and every rollout (one seed per RL step, see rl.train)
    steps: int = 3000                    # RL steps
    device: str = "cpu"                  # cpu | cuda (cuda: bf16 autocast; entropies always fp32)
    num_threads: int = 1                 # torch CPU threads during train() (restored after); 0 = leave as is
    # task
    task: str = "arith"                  # arith | countdown
    arith_max_operand: int = 20          # arith: operands in [0, arith_max_operand]
    arith_ops: str = "+"                 # arith: operators to draw from, e.g. "+" or "+-*"
    answer_prefix: bool = False          # arith, chat models: reply opened with "a + b = ", strict reward (tasks.py)
    countdown_numbers: int = 3           # countdown: numbers per problem
    countdown_max_number: int = 9        # countdown: numbers in [1, max]
    eval_size: int = 100                 # held-out problems, never sampled for training
    eval_every: int = 250                # greedy eval accuracy every k steps (and at step 0 and the last step)
    prompt_style: str = "auto"           # plain | chat | auto (chat iff the tokenizer has a chat template)
    # model
    model: str = "tiny"                  # tiny | smollm2 | a HF path or hub id
    tiny_arch: str = "llama"             # llama | qwen2
    tiny_hidden: int = 64                # tiny model: hidden size
    tiny_layers: int = 2                 # tiny model: transformer layers
    tiny_heads: int = 4                  # tiny model: attention heads
    warmstart_steps: int = 300           # supervised steps before RL (tiny models; 0 = none); weak on purpose
    warmstart_lr: float = 3e-3           # warm start: AdamW learning rate
    warmstart_batch: int = 64            # warm start: problems per step
    # rollout
    prompts_per_step: int = 32           # distinct prompts per RL step
    group_size: int = 8                  # responses per prompt (GRPO group)
    max_new_tokens: int = 6              # longest response in tokens
    temperature: float = 1.0             # sampling temperature (entropies use it too)
    dynamic_sampling: bool = False       # drop groups whose rewards are all equal (DAPO)
    overlong_buffer: int = 0             # DAPO soft overlong punishment zone in tokens (0 = off)
    overlong_penalty_factor: float = 1.0 # DAPO overlong punishment at the end of the buffer
    # optimisation
    mini_batch_size: int = 64            # responses per optimizer step
    ppo_epochs: int = 1                  # passes over the rollout batch
    micro_batch_size: int = 0            # responses per forward (gradient accumulation); 0 = mini_batch_size
    lr: float = 5e-4                     # AdamW learning rate of the RL updates
    warmup_steps: int = 30               # linear warmup in RL steps, then constant
    weight_decay: float = 0.0            # AdamW weight decay
    grad_clip: float = 1.0               # max gradient norm per update (clip_grad_norm_)
    # loss
    loss_mode: str = "dapo"              # dapo | gppo | clip_cov | kl_cov | dppo_tv | dppo_kl (losses.POLICY_LOSSES)
    clip_low: float = 0.2                # dppo_*: the divergence thresholds (TV 0.15, KL 0.05)
    clip_high: float = 0.28              # upper clip (DAPO clip-higher: 0.28)
    clip_c: float = 10.0                 # dual clip for A < 0; dppo_*: truncation of the ratio (recipe: 10000)
    agg: str = "token-mean"              # loss aggregation (losses.AGG_MODES), e.g. token-mean | seq-mean-token-mean
    erc: bool = False                    # Entropy Ratio Clipping gate
    erc_low: float = 0.95                # ERC band lower bound (strict)
    erc_high: float = 1.05               # ERC band upper bound (strict)
    clip_cov_ratio: float = 2e-4         # loss_mode clip_cov: fraction of tokens whose gradient is cut
    clip_cov_lb: float = 1.0             #   ... among those with covariance in (clip_cov_lb, clip_cov_ub)
    clip_cov_ub: float = 5.0             # loss_mode clip_cov: covariance upper bound
    kl_cov_ratio: float = 2e-4           # loss_mode kl_cov: fraction of top-covariance tokens given a KL penalty
    ppo_kl_coef: float = 1.0             #   ... of weight ppo_kl_coef
    entropy_penalty_coef: float = 0.0    # the quoted "dead-zone penalty on the mean ratio" form (not the paper's)
    entropy_penalty_low: float = 0.9     # penalty dead zone, lower
    entropy_penalty_high: float = 1.1    # penalty dead zone, upper
    entropy_coef: float = 0.0            # entropy bonus
    kl_coef: float = 0.0                 # KL to the frozen start (post warm start) model
    kl_type: str = "low_var_kl"          # KL estimator: kl | abs | mse | low_var_kl
    sft_coef: float = 0.1                # NLL on correct responses
    entropy_chunk_size: int = 0          # rows per chunk in logprobs_and_entropy (0 = all at once)
    # outputs
    save_every: int = 250                # checkpoint every k steps (0 = only at the end)
    log_tokens_every: int = 5            # per-token records every k steps (0 = never)
    log_tokens_responses: int = 4        # responses per logged step
    progress: bool = True                # tqdm bar on a terminal (never in a log file or a notebook page)

    def __post_init__(self):
        self.validate()

    @property
    def batch_size(self) -> int:
        """Responses per RL step."""
        return self.prompts_per_step * self.group_size

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * (self.batch_size // self.mini_batch_size)

    def _owners_checks(self) -> None:
        """The rules that the modules using these keys own (tasks, clip settings, ERC and penalty bands), called
        under the config's key names; their error becomes a ConfigError naming the key and what is allowed."""
        try:
            check_arith(self.arith_max_operand, self.arith_ops, names=("arith_max_operand", "arith_ops"))
            check_countdown(self.countdown_numbers, self.countdown_max_number,
                            names=("countdown_numbers", "countdown_max_number"))
            check_clip(self.clip_low, self.clip_high, self.clip_c)
            check_clip_cov(self.clip_cov_ratio, self.clip_cov_lb, self.clip_cov_ub)
            check_kl_cov(self.kl_cov_ratio, self.ppo_kl_coef)
            check_band(self.erc_low, self.erc_high, names=("erc_low", "erc_high"))
            check_band(self.entropy_penalty_low, self.entropy_penalty_high,
                       names=("entropy_penalty_low", "entropy_penalty_high"))
        except ParamError as e:
            raise ConfigError(f"config key {e.name!r} = {e.value!r} is invalid: allowed {e.allowed}") from None

    def validate(self) -> None:
        """Raise ConfigError naming the first bad key and its allowed values."""
        for f in dataclasses.fields(self):
            v, t = getattr(self, f.name), f.type
            t = {"int": int, "float": float, "str": str, "bool": bool}.get(t, t) if isinstance(t, str) else t
            if t is float and isinstance(v, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
                try:
                    v = float(v)
                    setattr(self, f.name, v)
                except ValueError:
                    pass
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                setattr(self, f.name, float(v))
            elif not isinstance(v, t) or (t is int and isinstance(v, bool)):
                raise ConfigError(f"config key {f.name!r} must be of type {t.__name__}, got {v!r}")
            if t is float and math.isnan(getattr(self, f.name)):  # every later check would name the wrong key
                raise ConfigError(f"config key {f.name!r} = nan is invalid: allowed a number, not NaN")

        def need(key: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r} is invalid: allowed {allowed}")

        choices = {"device": ("cpu", "cuda"), "task": tuple(TASKS), "prompt_style": ("auto", "plain", "chat"),
                   "tiny_arch": ("llama", "qwen2"), "loss_mode": tuple(POLICY_LOSSES), "agg": AGG_MODES,
                   "kl_type": KL_KINDS}
        for key, allowed in choices.items():
            need(key, getattr(self, key) in allowed, f"one of {list(allowed)}")
        for key in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "mini_batch_size", "ppo_epochs",
                    "tiny_hidden", "tiny_layers", "tiny_heads", "eval_size", "eval_every", "warmstart_batch",
                    "log_tokens_responses"):
            need(key, getattr(self, key) >= 1, "an integer >= 1")
        for key in ("warmstart_steps", "warmup_steps", "save_every", "log_tokens_every", "micro_batch_size",
                    "overlong_buffer", "entropy_chunk_size", "num_threads"):
            need(key, getattr(self, key) >= 0, "an integer >= 0")
        for key in ("lr", "warmstart_lr", "temperature", "grad_clip"):
            need(key, math.isfinite(getattr(self, key)) and getattr(self, key) > 0, "a finite number > 0")
        for key in ("weight_decay", "entropy_penalty_coef", "entropy_coef", "kl_coef", "sft_coef",
                    "overlong_penalty_factor"):
            need(key, math.isfinite(getattr(self, key)) and getattr(self, key) >= 0, "a finite number >= 0")
        self._owners_checks()
        need("group_size", self.group_size >= 2, "an integer >= 2 (GRPO needs a group)")
        need("answer_prefix", not self.answer_prefix or self.task == "arith", "true only with task 'arith'")
        need("mini_batch_size", self.batch_size % self.mini_batch_size == 0,
             f"a divisor of prompts_per_step x group_size = {self.batch_size}")
        need("micro_batch_size", self.micro_batch_size == 0 or self.mini_batch_size % self.micro_batch_size == 0,
             f"0 or a divisor of mini_batch_size = {self.mini_batch_size}")
        need("overlong_buffer", self.overlong_buffer <= self.max_new_tokens,
             f"0 <= overlong_buffer <= max_new_tokens = {self.max_new_tokens}")
        cpus = os.cpu_count() or 1
        need("num_threads", self.num_threads <= cpus, f"0 (leave as is) or 1..{cpus} (this machine's CPUs)")
        need("seed", 0 <= self.seed < MAX_SEED, f"an integer in [0, 2**32 - 1 = {MAX_SEED - 1}]")
        need("prompts_per_step", self.batch_size <= MAX_BATCH,
             f"prompts_per_step x group_size <= {MAX_BATCH} responses per step (got {self.batch_size})")
        if self.model == "tiny":
            head = self.tiny_hidden // self.tiny_heads
            need("tiny_heads", self.tiny_hidden % self.tiny_heads == 0 and head % 2 == 0,
                 f"a divisor of tiny_hidden = {self.tiny_hidden} leaving an even head size (rotary embeddings)")
        space = problem_space(self)
        need("eval_size", space is None or self.eval_size < space,
             f"1..{(space or 0) - 1}: the task has {space} distinct problems and training needs some left over")


_FIELDS = {f.name for f in dataclasses.fields(Config)}


def problem_space(cfg: Config) -> int | None:
    """Number of distinct problems (prompts) the config's task can generate; None when it is surely more than
    ``cfg.eval_size`` (a countdown task with more number tuples than that)."""
    if cfg.task == "arith":
        return (cfg.arith_max_operand + 1) ** 2 * len(set(cfg.arith_ops))
    n, top = cfg.countdown_numbers, cfg.countdown_max_number
    if top ** n > cfg.eval_size:  # every ordered tuple of numbers is at least one prompt
        return None
    prompts = 0  # ordered tuples x the targets reachable from their multiset (left-to-right chains, as generated)
    for combo in itertools.combinations_with_replacement(range(1, top + 1), n):
        targets = set()
        for order in set(itertools.permutations(combo)):
            for ops in itertools.product("+-*", repeat=n - 1):
                v = order[0]
                for op, x in zip(ops, order[1:]):
                    v = v + x if op == "+" else v - x if op == "-" else v * x
                targets.add(v)
        prompts += len(set(itertools.permutations(combo))) * len(targets)
    return prompts


def _check_keys(d: dict, where: str) -> None:
    for key in d:
        if key not in _FIELDS:
            near = difflib.get_close_matches(str(key), _FIELDS, n=3)
            hint = f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
            raise ConfigError(f"unknown config key {key!r} in {where}{hint}; known keys: {sorted(_FIELDS)}")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A YAML preset as a dict; a ``base: other.yaml`` key (relative to the file) is loaded first and updated.
    ``chain``: the files that led here (a ``base:`` cycle is an error naming them)."""
    if path.resolve() in chain:
        raise ConfigError(f"config key 'base' forms a cycle: {' -> '.join(map(str, chain + (path.resolve(),)))}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    base = d.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"config key 'base' in {path} must be a file name (a string), got {base!r}")
    merged = _read_yaml(path.parent / base, chain + (path.resolve(),)) if base else {}
    _check_keys(d, str(path))
    merged.update(d)
    return merged



def config_keys() -> list[tuple[str, str, str]]:
    """Every config key as ``(name, default, description)``, in the order of :class:`Config`. The description is the
    comment written beside the field in :class:`Config` (the one place it is written), which the train CLI's
    ``--help`` and the API page show."""
    import inspect
    import re

    docs = {}
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s{4}(\w+): [^=]+=[^#]*?(?:#\s*(.*))?$", line)
        if m:
            docs[m.group(1)] = (m.group(2) or "").strip()
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return [(k, repr(defaults[k]), docs.get(k, "")) for k in defaults]



def _rst_text(text: str) -> str:
    """Plain text safe inside RST: ``*`` and ``_`` escaped (no emphasis, no references); "-" when empty."""
    return "".join("\\" + ch if ch in "*_`|" else ch for ch in text) or "-"


def _keys_table() -> str:
    """:func:`config_keys` as an RST list-table (appended to :class:`Config`'s docstring for the API page)."""
    rows = "".join(f"   * - ``{k}``\n     - ``{d}``\n     - {_rst_text(c)}\n"
                   for k, d, c in config_keys())
    return ".. list-table:: Every key, its default and what it does\n   :header-rows: 1\n\n" \
           "   * - key\n     - default\n     - meaning\n" + rows


Config.__doc__ = f"{Config.__doc__}\n\n{_keys_table()}"


def load_config(config: Config | dict | str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """A Config from a Config, a dict, or a YAML path, with ``overrides`` applied; validated before returning."""
    if isinstance(config, Config):
        d = dataclasses.asdict(config)
    elif isinstance(config, dict):
        _check_keys(config, "the config dict")
        d = dict(config)
    elif config is None:
        d = {}
    else:
        d = _read_yaml(Path(config))
    overrides = overrides or {}
    _check_keys(overrides, "the overrides")
    d.update(overrides)
    return Config(**d)


def parse_set(items: list[str]) -> dict:
    """``["lr=1e-3", "erc=true"]`` -> ``{"lr": 0.001, "erc": True}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
