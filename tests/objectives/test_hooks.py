"""Per-trial dropout masks from a hash: the right keep rate, no visible correlation, the exact
bits of a plain-Python reference, and a trial's mask unmoved by padding or its neighbours."""

from __future__ import annotations

import pytest
import torch

from peftsearch.objectives.hooks import _feature_codes, _mix, keep_mask, row_keys

M32 = 0xFFFFFFFF


def _keys(n: int, seed: int = 0, step: int = 0) -> torch.Tensor:
    return row_keys(torch.full((n,), seed), torch.full((n,), step), torch.arange(n))


def _mask(n: int, width: int, feats: int, p: float, site: int = 0, **kw) -> torch.Tensor:
    keys = _keys(n, **kw)
    probs = torch.full((n,), p)
    return keep_mask((n, width, feats), keys, site, torch.arange(width), probs, torch.float32)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_rate_and_scale(p: float) -> None:
    m = _mask(64, 32, 64, p)  # 131,072 elements
    kept = (m > 0).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.005)
    values = m.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p))]


def test_neighbouring_elements_steps_and_sites_are_independent() -> None:
    p = 0.3
    both = (1 - p) ** 2 + p**2  # chance two independent elements agree
    m = _mask(64, 32, 64, p) > 0
    for a, b in [
        (m[:, :, 1:], m[:, :, :-1]),  # next feature
        (m[:, 1:], m[:, :-1]),  # next column
        (m[1:], m[:-1]),  # next row
        (m, _mask(64, 32, 64, p, step=1) > 0),  # next step
        (m, _mask(64, 32, 64, p, site=1) > 0),  # next dropout layer
        (m, _mask(64, 32, 64, p, seed=1) > 0),  # another seed
    ]:
        assert (a == b).float().mean().item() == pytest.approx(both, abs=0.01)


def test_rows_with_p_zero_keep_everything() -> None:
    keys = _keys(4)
    p = torch.tensor([0.0, 0.5, 0.0, 0.9])
    m = keep_mask((4, 7, 5), keys, 3, torch.arange(7), p, torch.float32)
    assert torch.equal(m[0], torch.ones(7, 5)) and torch.equal(m[2], torch.ones(7, 5))
    assert (m[3] == 0).float().mean() > 0.5


def _py_mix(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x5BD1E995) & M32
    return x ^ (x >> 16)


def test_the_hash_is_the_plain_uint32_arithmetic() -> None:
    """Reference in Python integers: catches an int32 product that does not wrap, a shift
    that sign-extends into the kept bits, or a platform-dependent step."""
    keys = _keys(3, seed=7, step=5)
    feats = 6
    p = 0.4
    m = keep_mask((3, 4, feats), keys, 9, torch.arange(4), torch.full((3,), p), torch.float32)
    codes = [c & M32 for c in _feature_codes(feats, "cpu").tolist()]
    for r, key in enumerate(keys.tolist()):
        site_key = _py_mix((key ^ (9 * 0x45EBCA77 & M32)) & M32)
        for c in range(4):
            cell = _py_mix((site_key ^ (c * 0x42B2AE3D & M32)) & M32)
            for f in range(feats):
                h = (cell ^ codes[f]) * 0x7FEB352D & M32
                signed = h - 2**32 if h >= 2**31 else h
                h = (h ^ ((signed >> 15) & M32)) * 0x5BD1E995 & M32  # an arithmetic shift
                top = (h - 2**32 if h >= 2**31 else h) >> 8  # signed top 24 bits
                kept = top >= round(p * 2**24) - 2**23
                assert (m[r, c, f].item() > 0) == kept, (r, c, f)
    assert int(_mix(torch.tensor([123456789]))[0]) == _py_mix(123456789)


def test_a_rows_mask_does_not_depend_on_the_width_or_other_rows() -> None:
    """What packing changes: the batch is wider (more padding columns) and holds other
    trials' rows. Columns are counted from the row's own start, keys from its own trial."""
    p = torch.full((2,), 0.2)
    keys = _keys(2, seed=3, step=4)
    narrow = keep_mask((2, 5, 8), keys, 1, torch.arange(5), p, torch.float32)
    other = _keys(3, seed=9, step=1)
    wide_keys = torch.cat([other, keys])
    wide = keep_mask((5, 9, 8), wide_keys, 1, torch.arange(9), torch.full((5,), 0.2), torch.float32)
    assert torch.equal(wide[3:, :5], narrow)
    # left padding: columns counted from the last one
    right_aligned = keep_mask((2, 9, 8), keys, 1, torch.arange(9).flip(0), p, torch.float32)
    narrow_left = keep_mask((2, 5, 8), keys, 1, torch.arange(5).flip(0), p, torch.float32)
    assert torch.equal(right_aligned[:, 4:], narrow_left)


@pytest.mark.parametrize("left", [False, True])
def test_prompt_columns_place_each_rows_prompt_with_a_backward_that_repeats_bit_for_bit(
    left: bool,
) -> None:
    """At a size where CPU kernels run threaded: advanced indexing's backward (index_put_
    with accumulate) summed in another order on each run; the demo's prompt trial scored
    0.574 and 0.586 on two runs of the same code. Here every run gives the same gradient."""
    from peftsearch.objectives.adapters.prompt import SoftPrompt

    prompt_columns = SoftPrompt.columns

    gen = torch.Generator().manual_seed(0)
    trials, length, hidden, n, width = 4, 16, 384, 64, 80
    prompts = torch.randn(trials, length, hidden, generator=gen, requires_grad=True)
    slot_rows = torch.arange(n) % trials
    k = torch.randint(1, length + 1, (n, 1), generator=gen)
    tokens = torch.randint(5, width - length, (n, 1), generator=gen)
    start = width - tokens - k if left else torch.zeros_like(k)
    j = torch.arange(width)
    inside = (j >= start) & (j < start + k)
    reference = prompts[slot_rows.unsqueeze(1), (j - start).clamp(0, length - 1)]
    placed = prompt_columns(prompts, slot_rows, start, width, left)
    assert placed.shape == (n, width, hidden)
    assert torch.equal(placed[inside], reference[inside])
    weights = torch.randn(n, width, hidden, generator=gen) * inside.unsqueeze(-1)
    grads = []
    for _ in range(4):
        prompts.grad = None
        (prompt_columns(prompts, slot_rows, start, width, left) * weights).sum().backward()
        grads.append(prompts.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    prompts.grad = None
    (reference * weights).sum().backward()
    assert torch.allclose(prompts.grad, grads[0], atol=1e-4)
