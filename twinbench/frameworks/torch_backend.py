"""The torch adapter (see twinbench/frameworks/__init__.py for the interface)."""
from __future__ import annotations

import contextlib
import gc
import os

import numpy as np

from models.layout import canonical_to_torch, check_weights, torch_to_canonical
from twinbench import imports
from twinbench.frameworks import (PreparedData, TwinModel, check_images, check_labels,
                                  global_rngs_kept, raised_from)
from twinbench.frameworks.keras_adam import KerasAdam
from twinbench.frameworks.modes import Step

torch = imports.torch()
F = torch.nn.functional
_RUNNING_STATISTICS = ("running_mean", "running_var")   # BatchNorm buffers that are weights


def _loss(model: TwinModel, logits, labels):
    """Mean cross-entropy from logits plus the architecture's L2 terms, l2 * ||W||^2 on the
    kernels of the layers that set Layer.l2: Keras's kernel_regularizer, in the loss as Keras
    has it (docs/methodology.md#resnet8). The kernels are model.net's own parameters (a
    torch.compile wrapper computing the logits shares them)."""
    loss = F.cross_entropy(logits, labels)
    for layer in model.arch.layers:
        if layer.l2:
            loss = loss + layer.l2 * getattr(model.net, layer.name).weight.square().sum()
    return loss

# Warm-up steps on a side stream before a CUDA-graph capture, as the whole-network example of
# torch's CUDA-graph notes runs: they allocate .grad, the optimizer state and the cuBLAS/cuDNN
# workspaces that the graph must find in place. Their effect is undone before the capture.
CAPTURE_WARMUP_STEPS = 3
# OOMs that reach us as a plain RuntimeError: an allocation inside a compiler or a CUDA call
# rather than the caching allocator, and a failed CPU allocation (no OutOfMemoryError class).
OOM_MESSAGES = ("CUDA out of memory", "CUDA error: out of memory",
                "DefaultCPUAllocator: can't allocate memory")


def training_step(model: TwinModel, optimizer, x, y, *, net=None, set_to_none: bool = True):
    """The one torch training step (forward, the training loss `_loss`, backward, update);
    returns the loss without waiting for the device. Every torch training loop here runs this
    one. `net` computes the logits (default model.net; the benchmark passes its
    torch.compile wrapper). set_to_none=False keeps .grad tensors in place (zeroed), as a
    CUDA graph needs."""
    optimizer.zero_grad(set_to_none=set_to_none)
    loss = _loss(model, (model.net if net is None else net)(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def tutorial_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images through the PyTorch tutorial's transform (torchvision's ToTensor, then
    Normalize((0.5,)*3, (0.5,)*3)), image by image as its DataLoader does; float32 NHWC out.
    The reference that lenet_sgd's NumPy normalization must equal to the bit."""
    import torchvision.transforms as T
    from PIL import Image
    reference = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    return np.stack([reference(Image.fromarray(im)).numpy().transpose(1, 2, 0) for im in images])


class TorchFramework:
    name = "torch"

    # Steps captured per CUDA graph in fit_epoch on a GPU (0: the eager loop). At batch 4-32
    # these networks are launch-bound: eager torch needs 41 s / 261 s for the two recipes on
    # an H100, one graph per step 7.5 s / 21.5 s (docs/methodology.md#gpu); many steps per graph remove most
    # of the rest. Set to 0 to measure the eager path.
    graph_steps = 50

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        self.pin_precision()

    # -- session, precision, memory ------------------------------------------------------------
    @classmethod
    def configure(cls, threads: int, determinism: bool) -> list[str]:
        """Session-wide settings before any model: CPU threads, deterministic kernels."""
        torch.set_num_threads(threads)
        if determinism:
            torch.use_deterministic_algorithms(True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return []

    @classmethod
    def describe(cls) -> str:
        import torchvision
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
        return (f"torch {torch.__version__} (torchvision {torchvision.__version__}, "
                f"{torch.get_num_threads()} threads, {cuda})")

    def pin_precision(self) -> None:
        """Full fp32 (TF32 off, no autocast), so that parity and throughput figures mean the
        same arithmetic in both frameworks; a CPU computes plain fp32 either way."""
        if self.device == "gpu":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

    def precision_policy(self) -> dict:
        tf32 = self.device == "gpu" and (torch.backends.cuda.matmul.allow_tf32
                                         or torch.backends.cudnn.allow_tf32)
        return {"tf32": bool(tf32), "autocast": None}

    def threads(self) -> int:
        return int(torch.get_num_threads())

    def oom_errors(self) -> tuple[type, ...]:
        return (torch.OutOfMemoryError,)   # torch.cuda.OutOfMemoryError is this class

    def is_oom(self, exc: BaseException) -> bool:
        return raised_from(exc, self.oom_errors(), RuntimeError, OOM_MESSAGES)

    def release_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    # -- building and moving weights ---------------------------------------------------------
    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel:
        """A fresh twin; seeds torch's generators only (see Framework.build)."""
        with global_rngs_kept():
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
        # m = mu*m - lr*g; p += m for a constant lr. fused=True: fastest step on CPU (docs/methodology.md#cpu-hosts).
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
        return float(training_step(model, optimizer, x, y))

    def synchronize(self) -> None:
        if self.device == "gpu":
            torch.cuda.synchronize()

    # -- whole-epoch training and evaluation (the accuracy suite's hot path) -----------------
    def prepare_data(self, model: TwinModel, images: np.ndarray, labels: np.ndarray):
        """Prepared float32 NHWC images -> NCHW tensor and labels tensor resident on the device."""
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return PreparedData(x.to(self.torch_device, getattr(torch, model.dtype)),
                            torch.from_numpy(labels).to(self.torch_device), labels)

    def fit_epoch(self, model: TwinModel, optimizer, data, batch_size: int, order: np.ndarray) -> float:
        """One epoch in the given sample order (last batch partial, as DataLoader and Keras
        do); returns the mean of the batch losses."""
        x, y = data.images, data.labels
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
            # no .item() per step: it would force a device sync
            total += training_step(model, optimizer, xe[start:start + batch_size],
                                   ye[start:start + batch_size])
            steps += 1
        return float(total) / steps

    def _fit_epoch_graphed(self, model: TwinModel, optimizer, data, batch_size: int, index) -> float:
        """fit_epoch on a GPU with `graph_steps` whole training steps per CUDA graph replay.

        The graph reads its batches from the resident data through a static index buffer
        refilled before each replay; batches that do not fill a whole graph (and the last,
        partial batch) run eagerly on the same parameters and optimizer state.
        """
        x, y = data.images, data.labels
        net = model.net
        k, n = self.graph_steps, len(index)
        per_graph = k * batch_size
        graphs = n // per_graph
        key = ("epoch", batch_size, k)
        if graphs and key not in model.compiled:
            # The warm-up steps are real steps of this epoch's first batches (then undone).
            static_index = index[:per_graph].clone()

            def body(j):
                idx = static_index[j * batch_size:(j + 1) * batch_size]
                return training_step(model, optimizer, x.index_select(0, idx),
                                     y.index_select(0, idx), set_to_none=False)
            net.train()
            model.compiled.clear()     # one captured epoch graph per model at a time
            model.compiled[key] = (static_index, *self.capture(net, optimizer, body, k))
        total = torch.zeros((), device=self.torch_device)
        steps = 0
        if graphs:
            static_index, graph, losses = model.compiled[key]
            for g in range(graphs):
                static_index.copy_(index[g * per_graph:(g + 1) * per_graph])
                graph.replay()
                total += losses.sum()
            steps += graphs * k
        net.train()
        for start in range(graphs * per_graph, n, batch_size):     # the remainder, eagerly
            idx = index[start:start + batch_size]
            total += training_step(model, optimizer, x.index_select(0, idx),
                                   y.index_select(0, idx), set_to_none=False)
            steps += 1
        return float(total) / steps

    def capture(self, net, optimizer, body, k: int):
        """The one CUDA-graph capture (the recipes' graphed epochs and the benchmark's
        cuda_graph mode): k calls body(0) .. body(k-1), each one step reading static buffers
        and returning a tensor, recorded into one graph. Returns (graph, outputs): replaying
        the graph refills `outputs`, body's results stacked.

        Training (an optimizer is given): CAPTURE_WARMUP_STEPS calls of body(0) on a side
        stream first, as torch's CUDA-graph notes require, then their effect is undone so that
        a run takes exactly its own steps: parameters and buffers (BatchNorm's running
        statistics) are restored, optimizer state that
        existed is restored, state that did not is zeroed (a zero momentum buffer, zero Adam
        moments or a zero step count give the same first update as no state at all).
        Inference: the warm-up and the capture run under no_grad; there is nothing to undo."""
        train = optimizer is not None
        grad_mode = contextlib.nullcontext() if train else torch.no_grad()
        params = list(net.parameters())
        buffers = list(net.buffers())       # BatchNorm's running statistics, restored too
        if train:
            saved = [p.detach().clone() for p in params + buffers]
            before = {id(p): {n: v.clone() for n, v in optimizer.state[p].items()
                              if torch.is_tensor(v)} for p in params}
            steps_before = [g["step"].clone() if torch.is_tensor(g.get("step")) else None
                            for g in optimizer.param_groups]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), grad_mode:
            for _ in range(CAPTURE_WARMUP_STEPS):
                body(0)
        torch.cuda.current_stream().wait_stream(side)
        if train:
            with torch.no_grad():
                for p, v in zip(params + buffers, saved):
                    p.copy_(v)
                for p in params:
                    for name, value in optimizer.state[p].items():
                        if torch.is_tensor(value):
                            if name in before[id(p)]:
                                value.copy_(before[id(p)][name])
                            else:
                                value.zero_()
                for group, step in zip(optimizer.param_groups, steps_before):
                    if torch.is_tensor(group.get("step")):     # KerasAdam's shared step count
                        group["step"].copy_(step) if step is not None else group["step"].zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), grad_mode:
            outputs = torch.stack([body(j) for j in range(k)])
        return graph, outputs

    def evaluate(self, model: TwinModel, data, batch_size: int = 1000) -> float:
        """Top-1 accuracy over prepared data, in large batches."""
        x, y = data.images, data.labels
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
        oneDNN's (docs/methodology.md#cpu-hosts: about 1.2x with the fused SGD step), and one thread beats two
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

    # -- benchmark steps (twinbench/frameworks/modes.py registers the modes) ------------------
    def step(self, model: TwinModel, optimizer, data: PreparedData, phase: str, *,
             compiled: bool = False) -> Step:
        """The "eager" step, or with compiled=True the "compiled" one (torch.compile with
        fullgraph=True, dynamic=False; the optimizer update stays eager)."""
        net = model.net
        net.train(phase == "train")
        x, y = data.images, data.labels
        if compiled:
            # A fresh compiler state per configuration: otherwise recompilations for each new
            # model instance and batch size pile up until dynamo's cache limit, past which it
            # silently runs eager and "compiled" would measure eager.
            torch.compiler.reset()
            net_call = torch.compile(net, fullgraph=True, dynamic=False)
        else:
            net_call = net
        if phase == "train":
            def run():
                return training_step(model, optimizer, x, y, net=net_call)
        else:
            def run():
                with torch.inference_mode():
                    return net_call(x)
        return Step(run=run, sync=self.synchronize, close=self._default_cpu_backend(), model=model)

    def graphed_step(self, model: TwinModel, optimizer, data: PreparedData, phase: str) -> Step:
        """The "cuda_graph" step: one whole step captured by `capture` (in prepare(), which
        the protocol times as compile_s) on the resident batch, then replayed."""
        net = model.net
        net.train(phase == "train")
        x, y = data.images, data.labels
        if phase == "train":
            def body(_j):
                return training_step(model, optimizer, x, y, set_to_none=False)
        else:
            def body(_j):
                return net(x)
        captured = {}

        def prepare():
            captured["graph"], captured["outputs"] = self.capture(net, optimizer, body, 1)

        def run():
            captured["graph"].replay()
            return captured["outputs"][0]

        restore = self._default_cpu_backend()

        def close():
            if "graph" in captured:
                captured["graph"].reset()
            restore()
        return Step(run=run, sync=self.synchronize, prepare=prepare, close=close, model=model)

    def _default_cpu_backend(self):
        """Switch oneDNN on and return the function that restores the previous setting: the
        accuracy suite may have switched it off for LeNet at batch 4, and the benchmark always
        measures torch's default CPU backend, whatever ran before it in the session."""
        before = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = True

        def restore():
            torch.backends.mkldnn.enabled = before
        return restore
