"""The torch adapter (see twinbench/frameworks/__init__.py for the interface)."""
from __future__ import annotations

import math

import numpy as np

from models.layout import canonical_to_torch, check_weights, torch_to_canonical
from twinbench import imports
from twinbench.frameworks import TwinModel, check_images, check_labels

torch = imports.torch()
F = torch.nn.functional


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras 3's update, so that one recipe means one optimizer in both frameworks.

    Keras folds both bias corrections into the step size and adds epsilon to sqrt(v) after
    that ("epsilon hat"): alpha = lr * sqrt(1 - b2^t) / (1 - b1^t);  p -= alpha * m / (sqrt(v) + eps).
    torch.optim.Adam adds eps to sqrt(v_hat) instead, which is a different function of eps.
    The moment updates are written in Keras's form, m += (g - m) * (1 - b1), for step parity.
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
                    s["step"] = 0
                    s["m"] = torch.zeros_like(p)
                    s["v"] = torch.zeros_like(p)
            states[0]["step"] += 1
            t = states[0]["step"]
            for s in states[1:]:
                s["step"] = t
            b1, b2, eps = group["beta_1"], group["beta_2"], group["epsilon"]
            alpha = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            ms = [s["m"] for s in states]
            vs = [s["v"] for s in states]
            torch._foreach_add_(ms, torch._foreach_mul(torch._foreach_sub(grads, ms), 1 - b1))
            squares = torch._foreach_mul(grads, grads)
            torch._foreach_add_(vs, torch._foreach_mul(torch._foreach_sub(squares, vs), 1 - b2))
            denom = torch._foreach_add(torch._foreach_sqrt(vs), eps)
            torch._foreach_sub_(params, torch._foreach_div(torch._foreach_mul(ms, alpha), denom))


class TorchFramework:
    name = "torch"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        if device == "gpu":
            # Precision policy, pinned and recorded: full fp32 (TF32 off) so that parity and
            # throughput figures mean the same arithmetic in both frameworks.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    # -- building and moving weights ---------------------------------------------------------
    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel:
        torch.manual_seed(seed)
        net = arch.torch_model().to(device=self.torch_device, dtype=getattr(torch, dtype))
        return TwinModel(arch=arch, net=net, dtype=dtype)

    def to_tensor(self, model: TwinModel, images: np.ndarray):
        """NHWC NumPy -> NCHW tensor on this device, in the model's dtype."""
        check_images(images)
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return x.to(device=self.torch_device, dtype=getattr(torch, model.dtype))

    def from_tensor(self, x) -> np.ndarray:
        """NCHW tensor -> NHWC NumPy (to compare input pipelines across frameworks)."""
        return x.detach().cpu().numpy().transpose(0, 2, 3, 1)

    def get_weights(self, model: TwinModel) -> dict[str, np.ndarray]:
        # .copy(): on the CPU .numpy() shares memory with the live parameter, so a later
        # training step would silently rewrite this "snapshot".
        state = {k: v.detach().cpu().numpy().copy() for k, v in model.net.state_dict().items()}
        return torch_to_canonical(model.arch, state)

    def set_weights(self, model: TwinModel, weights: dict[str, np.ndarray], **layout) -> None:
        check_weights(model.arch, weights)
        state = canonical_to_torch(model.arch, weights, **layout)
        dtype = getattr(torch, model.dtype)
        model.net.load_state_dict({k: torch.from_numpy(v).to(dtype) for k, v in state.items()})

    def parameter_count(self, model: TwinModel) -> int:
        return sum(p.numel() for p in model.net.parameters())

    # -- computing ---------------------------------------------------------------------------
    def forward(self, model: TwinModel, images: np.ndarray) -> np.ndarray:
        x = self.to_tensor(model, images)
        model.net.eval()
        with torch.no_grad():
            return model.net(x).cpu().numpy()

    def loss_and_gradients(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
                           wrt_inputs: bool = False):
        """(mean cross-entropy, {canonical weight name: gradient}); '__input__' holds dL/dx (NHWC)."""
        check_labels(labels, len(images))
        x = self.to_tensor(model, images).requires_grad_(wrt_inputs)
        model.net.train()
        model.net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model.net(x), torch.from_numpy(labels).to(self.torch_device))
        loss.backward()
        state = {name: p.grad.detach().cpu().numpy().copy() for name, p in model.net.named_parameters()}
        grads = torch_to_canonical(model.arch, state)
        if wrt_inputs:
            grads["__input__"] = self.from_tensor(x.grad)
        return float(loss.detach().cpu()), grads

    def loss(self, model: TwinModel, images: np.ndarray, labels: np.ndarray) -> float:
        check_labels(labels, len(images))
        model.net.train()
        with torch.no_grad():
            logits = model.net(self.to_tensor(model, images))
            return float(F.cross_entropy(logits, torch.from_numpy(labels).to(self.torch_device)))

    def feature_shapes(self, model: TwinModel, images: np.ndarray) -> dict[str, tuple]:
        """Per-image output shape of every named stage, as NHWC (Keras's view) for comparison."""
        shapes, hooks = {}, []
        for name, module in model.net.named_children():
            def hook(_m, _i, out, name=name):
                s = tuple(out.shape[1:])
                shapes[name] = (s[1], s[2], s[0]) if len(s) == 3 else s
            hooks.append(module.register_forward_hook(hook))
        try:
            self.forward(model, images)
        finally:
            for h in hooks:
                h.remove()
        return shapes

    # -- training ----------------------------------------------------------------------------
    def make_optimizer(self, model: TwinModel, recipe):
        params = model.net.parameters()
        if recipe.optimizer == "adam":
            return KerasAdam(params, lr=recipe.lr, beta_1=recipe.beta_1, beta_2=recipe.beta_2,
                             epsilon=recipe.epsilon)
        # SGD with momentum: torch's buf = mu*buf + g; p -= lr*buf equals Keras's
        # m = mu*m - lr*g; p += m for a constant lr. fused=True: fastest step on CPU (FACTS.md).
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, fused=True)

    def train_step(self, model: TwinModel, optimizer, images: np.ndarray, labels: np.ndarray) -> float:
        check_labels(labels, len(images))
        x = self.to_tensor(model, images)
        y = torch.from_numpy(labels).to(self.torch_device)
        model.net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model.net(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def synchronize(self) -> None:
        if self.device == "gpu":
            torch.cuda.synchronize()

    # -- whole-epoch training and evaluation (the accuracy suite's hot path) -----------------
    def prepare_data(self, model: TwinModel, images: np.ndarray, labels: np.ndarray):
        """Prepared float32 NHWC images -> (NCHW tensor, labels tensor) resident on the device."""
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return (x.to(self.torch_device, getattr(torch, model.dtype)),
                torch.from_numpy(labels).to(self.torch_device))

    def fit_epoch(self, model: TwinModel, optimizer, data, batch_size: int, order: np.ndarray) -> float:
        """One epoch in the given sample order (last batch partial, as DataLoader and Keras
        do); returns the mean of the batch losses."""
        x, y = data
        index = torch.from_numpy(order).to(self.torch_device)
        # One gather per epoch, then each batch is a view: no per-step indexing op.
        xe, ye = x.index_select(0, index), y.index_select(0, index)
        net = model.net
        net.train()
        total = torch.zeros((), device=self.torch_device)
        steps = 0
        for start in range(0, len(order), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xe[start:start + batch_size]), ye[start:start + batch_size])
            loss.backward()
            optimizer.step()
            total += loss.detach()   # no .item() per step: it would force a device sync
            steps += 1
        return float(total) / steps

    def evaluate(self, model: TwinModel, data, batch_size: int = 1000) -> float:
        """Top-1 accuracy over prepared data, in large batches."""
        x, y = data
        model.net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                pred = model.net(x[start:start + batch_size]).argmax(dim=1)
                correct += (pred == y[start:start + batch_size]).sum()
        return int(correct) / len(x)

    def configure_for_recipe(self, recipe) -> dict:
        """Backend choices that make the recipe's loop fastest here; returned for the record.

        At batch 4 on a CPU, LeNet is bound by per-op costs, and torch's native convolution
        beats oneDNN's (FACTS.md: about 1.2x with the fused SGD step)."""
        if self.device == "cpu" and recipe.batch_size <= 8:
            torch.backends.mkldnn.enabled = False
        else:
            torch.backends.mkldnn.enabled = True
        return {"mkldnn": torch.backends.mkldnn.enabled}
