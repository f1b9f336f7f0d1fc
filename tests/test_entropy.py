"""Entropy and log-probs: float64 references, dtype and stability, chunking, gradients, validation, and the fused
(torch.compile) path against the eager one, the auto default and its fallback."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch.utils._python_dispatch import TorchDispatchMode

import erc_core.entropy as ent
from erc_core.entropy import AUTO_FUSED_MIN_VOCAB, entropy_from_logits, logprobs_and_entropy


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


# --- fused (torch.compile) path and the auto default ---------------------------------------------------------
# The compiled kernels are module-level and shared by these tests: float32 and bf16, forward and backward, are
# compiled once per process (~10 s cold on a CPU, ~2-4 s from inductor's disk cache).

V_BIG = AUTO_FUSED_MIN_VOCAB + 3  # auto picks the fused path; not a multiple of the SIMD width (tail loop)


def _values_and_grads(logits: torch.Tensor, tokens: torch.Tensor, fused: bool | None, **kw):
    """logp, entropy and the gradient of sum(w1 * logp + w2 * entropy) w.r.t. logits (in the logits' dtype)."""
    x = logits.detach().clone().requires_grad_()
    logp, h = logprobs_and_entropy(x, tokens, fused=fused, **kw)
    w1 = torch.linspace(-1.0, 1.0, logp.numel()).reshape(logp.shape)
    w2 = torch.linspace(2.0, -1.0, logp.numel()).reshape(logp.shape)
    ((w1 * logp).sum() + (w2 * h).sum()).backward()
    return logp.detach(), h.detach(), x.grad


class PassThroughMode(TorchDispatchMode):
    """A do-nothing TorchDispatchMode, like the memory counters and tracers users run the library under."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of the compiled kernels (name -> count), still running them."""
    calls: dict[str, int] = {}
    real = ent._call

    def spy(name, *args):
        calls[name] = calls.get(name, 0) + 1
        return real(name, *args)

    monkeypatch.setattr(ent, "_call", spy)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("case", ["float32", "temperature_chunked", "bf16", "minus_inf", "one_row"])
def test_fused_matches_eager_values_and_gradients(case, kernel_calls):
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(2, 7, V_BIG, generator=g)
    tokens = torch.randint(0, V_BIG, (2, 7), generator=g)
    kw, tol = {}, dict(atol=2e-5, rtol=1e-5)
    if case == "temperature_chunked":
        kw = dict(temperature=0.7, chunk_size=3)  # 14 rows: chunks of 3 (recomputed in eager's backward)
    elif case == "bf16":
        logits, kw = logits.bfloat16(), dict(temperature=1.3)
        tol = dict(atol=1e-6, rtol=1.6e-2)  # the bf16 gradients may round differently: 1 bf16 ulp
    elif case == "minus_inf":
        logits[0, :, 5:3000] = -math.inf  # masked vocabulary entries
        logits[1, 3] = -math.inf          # a fully masked row (uniform, as in the eager path)
        tokens[0] = torch.randint(3000, V_BIG, (7,), generator=g)  # finite logp
    elif case == "one_row":
        logits, tokens = logits[0, :1], tokens[0, :1]
    eager = _values_and_grads(logits, tokens, False, **kw)
    assert not kernel_calls
    fused = _values_and_grads(logits, tokens, None, **kw)  # auto
    assert kernel_calls.get("forward", 0) >= 1 and kernel_calls.get("backward", 0) == 1
    for a, b in zip(eager, fused):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(b, a, **tol)
    h = entropy_from_logits(logits, kw.get("temperature", 1.0), kw.get("chunk_size"))  # auto, entropy only
    torch.testing.assert_close(h, eager[1], atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_fused_no_recompile_for_new_shapes_and_temperatures():
    """One graph per dtype: new row counts (1 row included), V, temperatures, chunking, with and without grad."""
    g = torch.Generator().manual_seed(4)

    def logits_and_tokens(rows: int, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        return 3 * torch.randn(rows, v, generator=g), torch.randint(0, v, (rows,), generator=g)

    x, t = logits_and_tokens(5, V_BIG)
    logprobs_and_entropy(x.requires_grad_(), t, fused=True)[1].sum().backward()  # compiled (if not yet)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for rows, v, temp, chunk in [(1, V_BIG, 1.0, None), (2, V_BIG + 16, 0.6, None), (37, 5000, 1.7, 8),
                                     (300, 4099, 1.0, 64)]:
            x, t = logits_and_tokens(rows, v)
            with torch.no_grad():
                logprobs_and_entropy(x, t, temp, chunk, fused=True)
            x.requires_grad_()
            logp, h = logprobs_and_entropy(x, t, temp, chunk, fused=True)
            (logp.sum() - h.sum()).backward()
            assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_fused_nan_or_posinf_logits_raise(bad, monkeypatch):
    """Bad logits raise ValueError from the fused path too (kernel replaced by its eager math: no compile)."""
    monkeypatch.setattr(ent, "_compiled", lambda name, device_type: {"forward": ent._fused_row_stats}[name])
    logits = torch.zeros(3, V_BIG)
    logits[1, 3] = bad
    with pytest.raises(ValueError, match="logits"):
        entropy_from_logits(logits, fused=True)


def test_auto_stays_eager_for_small_vocab_float64_and_dispatch_modes(kernel_calls):
    assert ent._want_fused(torch.zeros(2, V_BIG), None)
    assert not ent._want_fused(torch.zeros(2, AUTO_FUSED_MIN_VOCAB - 1), None)
    assert not ent._want_fused(torch.zeros(2, V_BIG, dtype=torch.float64), None)
    assert ent._want_fused(torch.zeros(2, 20), True) and not ent._want_fused(torch.zeros(2, V_BIG), False)
    logits = torch.randn(3, 20, requires_grad=True)
    logp, h = logprobs_and_entropy(logits, torch.tensor([0, 5, 19]))
    (logp.sum() + h.sum()).backward()
    entropy_from_logits(torch.randn(2, V_BIG, dtype=torch.float64))
    with PassThroughMode():  # torch.compile skips frames under such modes (and keeps skipping them): eager
        entropy_from_logits(torch.randn(2, V_BIG))
        entropy_from_logits(torch.randn(2, V_BIG), fused=True)
    assert not kernel_calls


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(name, device_type):
        def kernel(*args):
            raise RuntimeError("no C++ compiler found (simulated)")
        return kernel

    monkeypatch.setattr(ent, "_compiled", broken)
    monkeypatch.setattr(ent, "_FUSED_DISABLED", {})
    g = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(4, V_BIG, generator=g)
    tokens = torch.randint(0, V_BIG, (4,), generator=g)
    expected = logprobs_and_entropy(logits, tokens, fused=False)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as record:
        got = logprobs_and_entropy(logits, tokens)
        got_again = logprobs_and_entropy(logits, tokens)
        h = entropy_from_logits(logits)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    for out in (got, got_again):
        torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(h, expected[1], atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        logprobs_and_entropy(logits, tokens, fused=True)  # forced: the error propagates


def test_backward_compile_failure_falls_back_to_eager_gradient(monkeypatch):
    """A backward that fails to compile (in ``loss.backward()``, outside the forward's try) still gives the right
    gradient in auto mode, with one warning; the forward here runs its kernel's math uncompiled (no compile)."""
    def half_broken(name, device_type):
        if name == "forward":
            return ent._fused_row_stats

        def kernel(*args):
            raise RuntimeError("backward codegen failed (simulated)")
        return kernel

    monkeypatch.setattr(ent, "_compiled", half_broken)
    monkeypatch.setattr(ent, "_FUSED_DISABLED", {})
    g = torch.Generator().manual_seed(6)
    logits = 3 * torch.randn(2, 3, V_BIG, generator=g)
    tokens = torch.randint(0, V_BIG, (2, 3), generator=g)
    expected = _values_and_grads(logits, tokens, False, temperature=0.8)
    with pytest.warns(RuntimeWarning, match="backward codegen failed"):
        got = _values_and_grads(logits, tokens, None, temperature=0.8)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="backward codegen failed"):
        _values_and_grads(logits, tokens, True)


@pytest.mark.parametrize("fused", [False, None])
def test_finite_huge_logits_work(fused):
    """Finite logits of 3e38: z - max overflows float32 (the old error said 'NaN or +inf'); computed in float64."""
    x = torch.tensor([[3e38, 3e38, -3e38, 0.0], [1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    logp, h = logprobs_and_entropy(x, torch.tensor([0, 3]), fused=fused)
    ref_logp, ref_h = logprobs_and_entropy(torch.tensor([[1.0, 1.0, -1.0, 0.0]]) * 1e4, torch.tensor([0]))
    assert torch.allclose(h[:1], torch.tensor([math.log(2)])) and torch.allclose(logp[:1], -h[:1])
    assert torch.allclose(h[1:], entropy_from_logits(torch.tensor([[1.0, 2.0, 3.0, 4.0]])))
    assert h.dtype == logp.dtype == torch.float32 and torch.allclose(ref_h, h[:1])
    (logp.sum() + h.sum()).backward()
    assert bool(torch.isfinite(x.grad).all())
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        entropy_from_logits(torch.tensor([[math.nan, 1.0]]), fused=fused)
