"""Entropy and log-probs: float64 references, dtype and stability, chunking, gradients, validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from erc_core.entropy import entropy_from_logits, logprobs_and_entropy


def reference(logits: torch.Tensor, tokens: torch.Tensor | None = None, temperature: float = 1.0):
    """Textbook float64 entropy -sum p log p (and log p of tokens)."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    if tokens is None:
        return h
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), h


def test_known_values():
    assert entropy_from_logits(torch.zeros(7)).item() == pytest.approx(math.log(7), abs=1e-6)      # uniform
    assert entropy_from_logits(torch.tensor([0.0, -1e4, -1e4])).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert entropy_from_logits(p.log()).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(2, 300), st.floats(0.3, 3.0), st.floats(0.1, 20.0),
       st.integers(0, 2**31 - 1))
def test_float32_matches_float64_reference(b, t, v, temperature, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, t, v, generator=g)
    tokens = torch.randint(0, v, (b, t), generator=g)
    logp, h = logprobs_and_entropy(logits, tokens, temperature=temperature)
    ref_logp, ref_h = reference(logits, tokens, temperature)
    assert logp.dtype == h.dtype == torch.float32
    torch.testing.assert_close(h.double(), ref_h, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(logp.double(), ref_logp, atol=2e-5 * (1 + scale / temperature), rtol=1e-5)
    torch.testing.assert_close(entropy_from_logits(logits, temperature), h, atol=0, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 64), st.integers(1, 50), st.integers(0, 2**31 - 1))
def test_chunked_equals_unchunked(rows, v, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, v, generator=g)
    tokens = torch.randint(0, v, (rows,), generator=g)
    a = logprobs_and_entropy(logits, tokens)
    b = logprobs_and_entropy(logits, tokens, chunk_size=chunk)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=chunk), a[1], atol=1e-6, rtol=1e-6)


def test_chunked_gradients_equal_unchunked():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 33, generator=g)
    tokens = torch.randint(0, 33, (2, 7), generator=g)
    w1, w2 = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    grads = []
    for chunk in (None, 3):
        x = logits.clone().requires_grad_()
        logp, h = logprobs_and_entropy(x, tokens, chunk_size=chunk)
        ((w1 * logp).sum() + (w2 * h).sum()).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chunk", [None, 2])
def test_gradcheck_float64(chunk):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    tokens = torch.randint(0, 6, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda z: logprobs_and_entropy(z, tokens, 0.7, chunk), (x,))
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(z, 1.3, chunk), (x,))


def test_bf16_logits_computed_in_float32():
    g = torch.Generator().manual_seed(2)
    logits = (4 * torch.randn(3, 1000, generator=g)).bfloat16()
    h = entropy_from_logits(logits)
    assert h.dtype == torch.float32
    # exact for the bf16 values as given: error only from float32 accumulation, not bf16 arithmetic
    torch.testing.assert_close(h.double(), reference(logits.double()), atol=1e-5, rtol=1e-5)


def test_large_magnitude_logits_are_stable():
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4, -1e4], [3e4, 0.0, -3e4]])
    logp, h = logprobs_and_entropy(logits, torch.tensor([1, 0, 1]))
    torch.testing.assert_close(h.double(), reference(logits.double()), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(logp).all()
    assert h[1].item() == pytest.approx(math.log(3), abs=1e-6)


def test_minus_inf_logits_are_masked_vocabulary():
    logits = torch.tensor([[0.0, 0.0, -math.inf, -math.inf], [1.0, -math.inf, 2.0, 3.0]])
    h = entropy_from_logits(logits)
    assert h[0].item() == pytest.approx(math.log(2), abs=1e-6)
    torch.testing.assert_close(h[1:].double(), reference(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_posinf_logits_raise(bad):
    logits = torch.zeros(2, 5)
    logits[1, 3] = bad
    with pytest.raises(ValueError, match="logits"):
        entropy_from_logits(logits)


def test_validation():
    with pytest.raises(ValueError, match="temperature"):
        entropy_from_logits(torch.zeros(3), temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(3, 4), chunk_size=0)
    with pytest.raises(TypeError, match="logits"):
        entropy_from_logits(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens"):
        logprobs_and_entropy(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="tokens"):
        logprobs_and_entropy(torch.zeros(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="tokens"):
        logprobs_and_entropy(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))


@pytest.mark.slow
def test_fused_kernel_matches_eager():
    """``fused=True`` (torch.compile) computes the same numbers, values and gradients (compiles once: ~15 s)."""
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(2, 9, 301, generator=g)).requires_grad_()
    tokens = torch.randint(0, 301, (2, 9), generator=g)
    out = {}
    for fused in (False, True):
        logits.grad = None
        logp, h = logprobs_and_entropy(logits, tokens, temperature=0.9, fused=fused)
        (logp.sum() + h.sum()).backward()
        out[fused] = (logp.detach(), h.detach(), logits.grad.clone())
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
