"""The torch adapter (see twinbench/frameworks/__init__.py for the interface)."""
from __future__ import annotations

import contextlib

import numpy as np

from models.layout import canonical_to_torch, check_weights, torch_to_canonical
from twinbench import imports
from twinbench.frameworks import TwinModel, check_images, check_labels

torch = imports.torch()
F = torch.nn.functional
_RUNNING_STATISTICS = ("running_mean", "running_var")   # BatchNorm buffers that are weights


def _loss(model: TwinModel, logits, labels):
    """Mean cross-entropy from logits plus the architecture's L2 terms, l2 * ||W||^2 on the
    kernels of the layers that set Layer.l2: Keras's kernel_regularizer, in the loss as Keras
    has it (docs/methodology.md#resnet8)."""
    loss = F.cross_entropy(logits, labels)
    for layer in model.arch.layers:
        if layer.l2:
            loss = loss + layer.l2 * getattr(model.net, layer.name).weight.square().sum()
    return loss


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


class TorchFramework:
    name = "torch"

    # Steps captured per CUDA graph in fit_epoch on a GPU (0: the eager loop). At batch 4-32
    # these networks are launch-bound: eager torch needs 41 s / 261 s for the two recipes on
    # an H100, one graph per step 7.5 s / 21.5 s (FACTS.md); many steps per graph remove most
    # of the rest. Set to 0 to measure the eager path.
    graph_steps = 50

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
        """Parameters plus BatchNorm's running mean and variance: Keras's count_params() counts
        its moving statistics too (num_batches_tracked, a counter, is not a weight)."""
        return (sum(p.numel() for p in model.net.parameters())
                + sum(b.numel() for n, b in model.net.named_buffers()
                      if n.rsplit(".", 1)[-1] in _RUNNING_STATISTICS))

    # -- computing ---------------------------------------------------------------------------
    def forward(self, model: TwinModel, images: np.ndarray) -> np.ndarray:
        x = self.to_tensor(model, images)
        model.net.eval()
        with torch.no_grad():
            return model.net(x).cpu().numpy()

    def loss_and_gradients(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
                           wrt_inputs: bool = False, training: bool = True):
        """(mean cross-entropy, {canonical weight name: gradient}); '__input__' holds dL/dx (NHWC).
        training=False: BatchNorm normalizes with its running statistics (which then get
        gradients; in training mode theirs are zero)."""
        check_labels(labels, len(images))
        x = self.to_tensor(model, images).requires_grad_(wrt_inputs)
        model.net.train(training)
        model.net.zero_grad(set_to_none=True)
        statistics = [b for n, b in model.net.named_buffers()
                      if n.rsplit(".", 1)[-1] in _RUNNING_STATISTICS]
        try:
            for b in statistics:
                b.requires_grad_(True)
            loss = _loss(model, model.net(x), torch.from_numpy(labels).to(self.torch_device))
            loss.backward()
        finally:
            for b in statistics:
                b.requires_grad_(False)
        tensors = dict(model.net.named_parameters()) | dict(model.net.named_buffers())
        state = {name: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().cpu().numpy().copy()
                 for name, t in tensors.items()}
        for b in statistics:
            b.grad = None
        grads = torch_to_canonical(model.arch, state)
        if wrt_inputs:
            grads["__input__"] = self.from_tensor(x.grad)
        return float(loss.detach().cpu()), grads

    def loss(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
             training: bool = True) -> float:
        check_labels(labels, len(images))
        model.net.train(training)
        with torch.no_grad():
            logits = model.net(self.to_tensor(model, images))
            return float(_loss(model, logits, torch.from_numpy(labels).to(self.torch_device)))

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

    def set_learning_rate(self, model: TwinModel, optimizer, lr: float) -> None:
        """A recipe's per-epoch schedule. A captured CUDA graph holds the old lr as a constant,
        so a changed lr drops it (fit_epoch captures again)."""
        for group in optimizer.param_groups:
            if group["lr"] != lr:
                group["lr"] = lr
                model.compiled_step = None

    def train_step(self, model: TwinModel, optimizer, images: np.ndarray, labels: np.ndarray) -> float:
        check_labels(labels, len(images))
        x = self.to_tensor(model, images)
        y = torch.from_numpy(labels).to(self.torch_device)
        model.net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, model.net(x), y)
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
        if self.device == "gpu" and self.graph_steps > 0:
            return self._fit_epoch_graphed(model, optimizer, data, batch_size, index)
        # One gather per epoch, then each batch is a view: no per-step indexing op.
        xe, ye = x.index_select(0, index), y.index_select(0, index)
        net = model.net
        net.train()
        total = torch.zeros((), device=self.torch_device)
        steps = 0
        for start in range(0, len(order), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(model, net(xe[start:start + batch_size]), ye[start:start + batch_size])
            loss.backward()
            optimizer.step()
            total += loss.detach()   # no .item() per step: it would force a device sync
            steps += 1
        return float(total) / steps

    def _fit_epoch_graphed(self, model: TwinModel, optimizer, data, batch_size: int, index) -> float:
        """fit_epoch on a GPU with `graph_steps` whole training steps per CUDA graph replay.

        The graph reads its batches from the resident data through a static index buffer
        refilled before each replay; batches that do not fill a whole graph (and the last,
        partial batch) run eagerly on the same parameters and optimizer state.
        """
        x, y = data
        k, n = self.graph_steps, len(index)
        per_graph = k * batch_size
        graphs = n // per_graph
        key = (batch_size, k)
        if graphs and (model.compiled_step is None or model.compiled_step[0] != key):
            model.compiled_step = (key, self._capture(model, optimizer, x, y, batch_size, k, index))
        total = torch.zeros((), device=self.torch_device)
        steps = 0
        if graphs:
            graph, static_index, losses = model.compiled_step[1]
            for g in range(graphs):
                static_index.copy_(index[g * per_graph:(g + 1) * per_graph])
                graph.replay()
                total += losses.sum()
            steps += graphs * k
        model.net.train()
        for start in range(graphs * per_graph, n, batch_size):     # the remainder, eagerly
            idx = index[start:start + batch_size]
            optimizer.zero_grad(set_to_none=False)
            loss = _loss(model, model.net(x.index_select(0, idx)), y.index_select(0, idx))
            loss.backward()
            optimizer.step()
            total += loss.detach()
            steps += 1
        return float(total) / steps

    def _capture(self, model: TwinModel, optimizer, x, y, batch_size: int, k: int, index):
        """Capture k training steps into one CUDA graph (warm-up on a side stream first, as
        torch's CUDA-graph notes require, so that optimizer state and cuBLAS/cuDNN workspaces
        exist before capture). The warm-up steps are real steps of this epoch's first batches."""
        net = model.net
        net.train()
        static_index = index[:k * batch_size].clone()
        losses = torch.zeros(k, device=self.torch_device)

        def steps():
            for j in range(k):
                idx = static_index[j * batch_size:(j + 1) * batch_size]
                optimizer.zero_grad(set_to_none=False)
                loss = _loss(model, net(x.index_select(0, idx)), y.index_select(0, idx))
                loss.backward()
                optimizer.step()
                losses[j].copy_(loss.detach())

        # Warm-up: one eager step allocates .grad and the optimizer state (momentum buffers,
        # Adam moments and step count), which the graph must find in place. Its effect is then
        # undone, so the run takes exactly the recipe's steps: parameters are restored, and
        # state that did not exist before is zeroed (a zero momentum buffer or zero Adam
        # moments at step 0 give the same first update as no state at all).
        params = list(net.parameters())
        saved = [p.detach().clone() for p in params]
        buffers = list(net.buffers())            # BatchNorm's running statistics, restored too
        saved_buffers = [b.clone() for b in buffers]
        before = {id(p): {n: v.clone() for n, v in optimizer.state[p].items() if torch.is_tensor(v)}
                  for p in params}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            idx = static_index[:batch_size]
            optimizer.zero_grad(set_to_none=False)
            _loss(model, net(x.index_select(0, idx)), y.index_select(0, idx)).backward()
            optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, v in zip(params + buffers, saved + saved_buffers):
                p.copy_(v)
            for p in params:
                for name, value in optimizer.state[p].items():
                    if torch.is_tensor(value):
                        if name in before[id(p)]:
                            value.copy_(before[id(p)][name])
                        else:
                            value.zero_()
            for group in optimizer.param_groups:
                if torch.is_tensor(group.get("step")):     # KerasAdam's shared step count
                    group["step"].sub_(1)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            steps()
        return graph, static_index, losses

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

    @contextlib.contextmanager
    def recipe_settings(self, recipe):
        """Backend choices that make this recipe's loop fastest here, restored afterwards;
        yields them for the result row.

        At batch 4 on a CPU, LeNet is bound by per-op costs: torch's native convolution beats
        oneDNN's (FACTS.md: about 1.2x with the fused SGD step), and one thread beats two
        (ops this small gain nothing from a split, and a second thread waiting on a busy core
        cost 2.5x in our measurement on the 2-core box)."""
        saved = (torch.backends.mkldnn.enabled, torch.get_num_threads())
        small_cpu_batches = self.device == "cpu" and recipe.batch_size <= 8
        try:
            if small_cpu_batches:
                torch.backends.mkldnn.enabled = False
                torch.set_num_threads(1)
            if self.device == "gpu":
                yield {"cuda_graph_steps": self.graph_steps, "tf32": False}
            else:
                yield {"mkldnn": torch.backends.mkldnn.enabled, "threads": torch.get_num_threads()}
        finally:
            torch.backends.mkldnn.enabled, threads = saved
            torch.set_num_threads(threads)
