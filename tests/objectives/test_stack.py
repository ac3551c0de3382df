"""The stacked block and its one AdamW step: each row trains exactly as its own
``torch.optim.AdamW`` + ``clip_grad_norm_`` + linear warmup/decay would, whatever its neighbours."""

from __future__ import annotations

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from peftsearch.objectives.stack import Field, Stack

FIELDS = {
    "lora.q.A": Field((2, 3), "lora"),
    "prompt": Field((4, 3), "prompt"),
    "head.c.weight": Field((2, 3), "head"),
    "head.c.bias": Field((2,), "head"),
}
# Two trials: (rates per part, weight decay, warmup, total, max norm, the step they join at)
TRIALS = [
    ({"lora": 1e-2, "prompt": 3e-1, "head": 5e-2}, 0.1, 2, 9, 0.05, 0),
    ({"lora": 4e-3, "prompt": 1e-1, "head": 2e-2}, 0.0, 0, 6, 10.0, 2),
]


def _reference(init: dict[str, torch.Tensor], cfg: tuple) -> tuple[dict, list, None]:
    """The same trial as plain tensors with torch's own optimizer, clip and schedule."""
    rates, wd, warmup, total, max_norm, _ = cfg
    params = {n: torch.nn.Parameter(t.clone()) for n, t in init.items()}
    groups = []
    for name, p in params.items():
        part = FIELDS[name].part
        groups.append(
            {"params": [p], "lr": rates[part], "weight_decay": wd if p.ndim >= 2 else 0.0}
        )
    opt = torch.optim.AdamW(groups, lr=rates["lora"])
    sched = get_linear_schedule_with_warmup(opt, warmup, total)
    return params, [opt, sched, max_norm], None


def test_each_row_steps_like_its_own_adamw_clip_and_schedule() -> None:
    gen = torch.Generator().manual_seed(0)
    stack = Stack(FIELDS, rows=3, device=torch.device("cpu"))  # row 1 stays free
    inits = [{n: torch.randn(f.shape, generator=gen) for n, f in FIELDS.items()} for _ in TRIALS]
    refs = [_reference(init, cfg) for init, cfg in zip(inits, TRIALS, strict=True)]
    rows = [0, 2]
    for step in range(8):
        for i, (rates, wd, warmup, total, max_norm, joins) in enumerate(TRIALS):
            if step == joins:
                stack.place(rows[i], inits[i], rates, wd, warmup, total, max_norm, live=True)
        stack.zero_grad()
        for i, (*_, joins) in enumerate(TRIALS):
            if step < joins or step - joins >= TRIALS[i][3]:
                continue
            params, (opt, sched, max_norm), _ = refs[i]
            grads = {n: torch.randn(f.shape, generator=gen) for n, f in FIELDS.items()}
            for name, g in grads.items():
                stack.fields[name].grad[rows[i]].copy_(g)
                params[name].grad = g.clone()
            torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
            opt.step()
            sched.step()
        stack.step()
        for i, (*_, joins) in enumerate(TRIALS):
            if step < joins:
                continue
            params = refs[i][0]
            for name in FIELDS:
                mine = stack.fields[name].detach()[rows[i]]
                assert mine == pytest.approx(params[name].detach(), abs=1e-5), (step, i, name)
    assert stack.steps.tolist() == [8, 0, 6]  # each row's own age; the free row never moved
    assert torch.equal(stack.data[1], torch.zeros_like(stack.data[1]))


def test_a_smaller_tensor_in_a_larger_field_keeps_zero_padding_and_trains_alone() -> None:
    """Rank 1 in a rank-3 field: the padding never gets a gradient, so it never moves, and
    the corner trains like the unpadded tensor."""
    big = {"lora.q.A": Field((3, 4), "lora")}
    small = {"lora.q.A": Field((1, 4), "lora")}
    value = torch.randn(1, 4, generator=torch.Generator().manual_seed(1))
    stacks = [Stack(big, 2, torch.device("cpu")), Stack(small, 1, torch.device("cpu"))]
    for stack in stacks:
        stack.place(0, {"lora.q.A": value}, {"lora": 0.1}, 0.01, 0, 5, 1.0, live=True)
    for _ in range(5):
        g = torch.randn(1, 4)
        for stack in stacks:
            stack.zero_grad()
            stack.fields["lora.q.A"].grad[0, :1].copy_(g)
            stack.step()
    padded, plain = (s.fields["lora.q.A"].detach()[0] for s in stacks)
    assert torch.equal(padded[1:], torch.zeros(2, 4))
    assert torch.equal(stacks[0].m[0, 4:], torch.zeros(8))
    assert padded[:1] == pytest.approx(plain, abs=1e-7)


def test_resized_keeps_every_rows_values_moments_and_age() -> None:
    stack = Stack({"lora.q.A": Field((1, 2), "lora")}, 1, torch.device("cpu"))
    stack.place(0, {"lora.q.A": torch.tensor([[1.0, 2.0]])}, {"lora": 0.1}, 0.0, 0, 9, 1.0, True)
    stack.fields["lora.q.A"].grad.fill_(0.5)
    stack.step()
    grown = stack.resized({"lora.q.A": Field((2, 2), "lora"), "prompt": Field((3, 2), "prompt")}, 3)
    assert grown.rows == 3 and grown.steps.tolist() == [1, 0, 0]
    assert torch.equal(
        grown.fields["lora.q.A"].detach()[0, :1], stack.fields["lora.q.A"].detach()[0]
    )
    assert torch.equal(
        grown.view_of(grown.m, "lora.q.A")[0, :1], stack.view_of(stack.m, "lora.q.A")[0]
    )
    assert torch.equal(grown.fields["prompt"].detach(), torch.zeros(3, 3, 2))
    assert grown.rates[0, 0].item() == pytest.approx(0.1)
