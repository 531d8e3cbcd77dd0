"""Adam as the paper trains with it (lr 3e-4), and its step without the per-call Python work.

``torch.optim.Adam(fused=True).step()`` runs one fused kernel over all parameters, but first
spends about 0.5 ms per call in Python (grouping tensors, profiler hooks, lazy-state checks) and
``zero_grad`` another 0.1 ms: on a CPU that is 5 % of a training step of the paper's MLP.
:class:`AdamStep` calls the same kernel on lists it builds once, so the update is bit for bit
that of ``optimizer.step()`` (tested), and the moments and step counts stay in the optimiser's own
state, so checkpoints are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over every trainable parameter, with the fused kernel where the device has one."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "mps")


def _fused_adam_settings(optimizer: torch.optim.Optimizer) -> dict | None:
    """The keyword arguments of ``torch._fused_adam_`` equivalent to ``optimizer.step()``, or None."""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1 or not hasattr(torch, "_fused_adam_"):
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or any(group.get(k) for k in ("amsgrad", "maximize", "capturable", "differentiable",
                                                             "decoupled_weight_decay")) or torch.is_tensor(group["lr"]):
        return None
    beta1, beta2 = group["betas"]
    return dict(lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                amsgrad=False, maximize=False)


class AdamStep:
    """``zero_grad`` and ``step`` of a fused ``torch.optim.Adam`` with lists built once.

    Build it after any ``optimizer.load_state_dict`` (it keeps the state tensors it finds then),
    and do not change the learning rate afterwards. Optimisers it cannot reproduce exactly (not
    fused, amsgrad, several parameter groups, a tensor learning rate) fall back to their own methods.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.settings = _fused_adam_settings(optimizer)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self._key, self._lists = None, None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        if self.settings is None:
            self.optimizer.step()
            return
        params = [p for p in self.params if p.grad is not None]  # as torch.optim.Adam, skip parameters without one
        key = tuple(map(id, params))
        if key != self._key:
            self._key, self._lists = key, self._states(params)
        exp_avgs, exp_avg_sqs, steps = self._lists
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, **self.settings)

    def _states(self, params: list) -> tuple:
        """The optimiser's state of each parameter, created as Adam(fused=True) creates it on its first step."""
        for p in params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.optimizer.state[p] for p in params]
        return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states]
