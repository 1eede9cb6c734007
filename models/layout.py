"""Weight layouts: the canonical (Keras) layout <-> torch's, in NumPy.

Torch stores conv kernels OIHW and dense kernels (out, in); Keras stores HWIO and (in, out).
Flatten differs too: torch flattens (C, H, W), Keras (H, W, C), so the first dense layer's
input rows are permuted when weights cross over. Every conversion is a pure transpose or
permutation, so a round trip is bitwise exact. BatchNorm vectors only change names
(models.spec.BN_WEIGHTS); torch's num_batches_tracked has no Keras counterpart and is not a
canonical weight (the twins' torch BatchNorm does not keep one: models/resnet8.py).
"""
from __future__ import annotations

import numpy as np

from models.spec import BN_WEIGHTS, Architecture


def _flatten_permutation(chw: tuple[int, int, int]) -> np.ndarray:
    """perm[i] = torch (C,H,W) flat index of the canonical (H,W,C) flat position i."""
    c, h, w = chw
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def canonical_to_torch(arch: Architecture, weights: dict[str, np.ndarray], *,
                       permute_flatten: bool = True) -> dict[str, np.ndarray]:
    """Canonical names and layout -> torch state_dict names ('conv1.weight') and layout.

    permute_flatten=False exists only so that tests can show the parity checks catch it.
    """
    out = {}
    for layer in arch.layers:
        if layer.kind == "bn":
            out.update({f"{layer.name}.{t}": np.ascontiguousarray(weights[f"{layer.name}/{k}"])
                        for k, t in BN_WEIGHTS.items()})
            continue
        kernel = weights[f"{layer.name}/kernel"]
        if layer.kind == "conv":
            kernel = kernel.transpose(3, 2, 0, 1)                     # HWIO -> OIHW
        else:
            if layer.name == arch.first_dense and permute_flatten:
                # canonical row i (H,W,C order) belongs at torch column perm[i] (C,H,W order)
                reordered = np.empty_like(kernel)
                reordered[_flatten_permutation(arch.flatten_chw)] = kernel
                kernel = reordered
            kernel = kernel.T                                          # (in, out) -> (out, in)
        out[f"{layer.name}.weight"] = np.ascontiguousarray(kernel)
        out[f"{layer.name}.bias"] = np.ascontiguousarray(weights[f"{layer.name}/bias"])
    return out


def torch_to_canonical(arch: Architecture, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Torch state_dict names and layout -> canonical names and layout (inverse of the above)."""
    out = {}
    for layer in arch.layers:
        if layer.kind == "bn":
            out.update({f"{layer.name}/{k}": np.ascontiguousarray(state[f"{layer.name}.{t}"])
                        for k, t in BN_WEIGHTS.items()})
            continue
        kernel = state[f"{layer.name}.weight"]
        if layer.kind == "conv":
            kernel = kernel.transpose(2, 3, 1, 0)                     # OIHW -> HWIO
        else:
            kernel = kernel.T                                          # (out, in) -> (in, out)
            if layer.name == arch.first_dense:
                kernel = kernel[_flatten_permutation(arch.flatten_chw)]
        out[f"{layer.name}/kernel"] = np.ascontiguousarray(kernel)
        out[f"{layer.name}/bias"] = np.ascontiguousarray(state[f"{layer.name}.bias"])
    return out


def check_weights(arch: Architecture, weights: dict[str, np.ndarray]) -> None:
    """Refuse weights that do not fit the architecture, naming the offending tensor."""
    expected = arch.canonical_shapes()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"{arch.name}: weights do not match the architecture "
                         f"(missing {missing}, unexpected {extra})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != tuple(shape):
            raise ValueError(f"{arch.name}: {name} has shape {tuple(weights[name].shape)}, "
                             f"expected {tuple(shape)} (canonical layout: conv HWIO, dense (in, out))")
