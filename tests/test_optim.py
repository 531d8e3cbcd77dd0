"""AdamStep: the same update as torch.optim.Adam(fused=True).step(), bit for bit, with less Python per call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqlib.optim import AdamStep, make_optimizer


def _model_and_batches(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model.register_parameter("unused", nn.Parameter(torch.ones(2)))  # never gets a gradient: Adam must skip it
    batches = [torch.randn(5, 6, generator=torch.Generator().manual_seed(i)) for i in range(7)]
    return model, batches


def _train(model, optimizer, batches, use_adam_step: bool):
    adam = AdamStep(optimizer)
    for x in batches:
        loss = model(x).pow(2).mean()
        if use_adam_step:
            adam.zero_grad(), loss.backward(), adam.step()
        else:
            optimizer.zero_grad(set_to_none=True), loss.backward(), optimizer.step()


@pytest.mark.parametrize("lr", [3e-4, 0.1])
def test_adam_step_equals_torch_adam_bit_for_bit(lr):
    reference, batches = _model_and_batches()
    fast, _ = _model_and_batches()
    ref_opt = make_optimizer(reference, lr, torch.device("cpu"))
    fast_opt = make_optimizer(fast, lr, torch.device("cpu"))
    assert AdamStep(fast_opt).settings is not None  # the fast path is the one under test
    _train(reference, ref_opt, batches, use_adam_step=False)
    _train(fast, fast_opt, batches, use_adam_step=True)
    for (name, a), b in zip(reference.named_parameters(), fast.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(reference[0].weight, _model_and_batches()[0][0].weight)  # training moved the weights
    # the optimiser's own state is kept, as torch leaves it: checkpoints and resuming are unchanged
    ref_state, fast_state = ref_opt.state_dict()["state"], fast_opt.state_dict()["state"]
    assert ref_state.keys() == fast_state.keys() and len(ref_state) == 4  # "unused" has no state in either
    for k in ref_state:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(ref_state[k][key], fast_state[k][key]), (k, key)


def test_adam_step_continues_from_loaded_state():
    """Half the steps, a state-dict round trip into a new optimiser, the other half: same weights."""
    reference, batches = _model_and_batches()
    _train(reference, make_optimizer(reference, 1e-2, torch.device("cpu")), batches, use_adam_step=False)
    resumed, _ = _model_and_batches()
    first = make_optimizer(resumed, 1e-2, torch.device("cpu"))
    _train(resumed, first, batches[:3], use_adam_step=True)
    second = make_optimizer(resumed, 1e-2, torch.device("cpu"))
    second.load_state_dict(first.state_dict())
    _train(resumed, second, batches[3:], use_adam_step=True)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_adam_step_falls_back_for_optimisers_it_cannot_reproduce():
    model, batches = _model_and_batches()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    assert AdamStep(optimizer).settings is None
    reference, _ = _model_and_batches()
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, amsgrad=True)
    _train(model, optimizer, batches, use_adam_step=True)
    _train(reference, ref_opt, batches, use_adam_step=False)
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
