"""Adam with Keras 3's update rule, as a torch optimizer (the torch adapter's "adam")."""
from __future__ import annotations

from twinbench import imports

torch = imports.torch()


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras 3's update, so that one recipe means one optimizer in both frameworks.

    Keras folds both bias corrections into the step size and adds epsilon to sqrt(v) after
    that ("epsilon hat"): alpha = lr * sqrt(1 - b2^t) / (1 - b1^t);  p -= alpha * m / (sqrt(v) + eps).
    torch.optim.Adam adds eps to sqrt(v_hat) instead, which is a different function of eps.
    Moments are updated in Keras's form, m += (g - m) * (1 - b1), and alpha is computed as
    Keras does, in the parameters' dtype, for step parity. The step count is a tensor on the
    parameters' device, so a CUDA graph that captures step() stays right on every replay.
    """

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, s in zip(params, states):
                if not s:
                    s["m"] = torch.zeros_like(p)
                    s["v"] = torch.zeros_like(p)
            if "step" not in group:    # one count per group, as Keras keeps one `iterations`
                group["step"] = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
            t = group["step"]
            t.add_(1)
            b1, b2, eps = group["beta_1"], group["beta_2"], group["epsilon"]
            one = torch.ones((), dtype=t.dtype, device=t.device)
            alpha = group["lr"] * torch.sqrt(one - torch.pow(b2, t)) / (one - torch.pow(b1, t))
            ms = [s["m"] for s in states]
            vs = [s["v"] for s in states]
            torch._foreach_add_(ms, torch._foreach_mul(torch._foreach_sub(grads, ms), 1 - b1))
            squares = torch._foreach_mul(grads, grads)
            torch._foreach_add_(vs, torch._foreach_mul(torch._foreach_sub(squares, vs), 1 - b2))
            denom = torch._foreach_add(torch._foreach_sqrt(vs), eps)
            torch._foreach_sub_(params, torch._foreach_div(torch._foreach_mul(ms, alpha), denom))
