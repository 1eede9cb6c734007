"""Deliberately broken twins, for one purpose only: proving that the parity checks can fail.

A parity suite that has never been seen to fail proves nothing. The suites build a correct
pair of twins, break one of them here in a way a real port could get wrong, and assert that
the same comparison that passes for the correct pair raises. Nothing else may use this module.

The third classic port mistake, skipping the flatten permutation when weights cross over,
needs no surgery: `TorchFramework.set_weights(model, w, permute_flatten=False)` does it.
"""
from __future__ import annotations

import sys

from twinbench import imports


def _is_torch(model) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model.net, torch.nn.Module)


def break_relu(model, layer: str) -> None:
    """Drop the ReLU that follows `layer` (e.g. 'fc1') from one twin, in place.

    Keras: the layer's activation becomes linear. Torch: the twins apply ReLU functionally in
    forward(), so the net is traced with torch.fx and the relu node fed by `layer` is cut out;
    the traced module keeps the submodule names, so weights still load by the same names.
    """
    if _is_torch(model):
        fx = imports.torch().fx
        traced = fx.symbolic_trace(model.net)
        relus = [user for node in traced.graph.nodes
                 if node.op == "call_module" and node.target == layer
                 for user in node.users
                 if user.op in ("call_function", "call_method")
                 and getattr(user.target, "__name__", user.target) == "relu"]
        if len(relus) != 1:
            raise ValueError(f"{model.arch.name}: expected one relu fed by {layer!r}, "
                             f"found {len(relus)}")
        relu = relus[0]
        relu.replace_all_uses_with(relu.args[0])
        traced.graph.erase_node(relu)
        traced.recompile()
        model.net = traced
    else:
        imports.tensorflow()
        import keras
        k_layer = model.net.get_layer(layer)
        if k_layer.activation is not keras.activations.relu:
            raise ValueError(f"{model.arch.name}: layer {layer!r} has no relu activation "
                             f"({k_layer.activation.__name__})")
        k_layer.activation = keras.activations.linear
    model.compiled.clear()   # a traced training step would still hold the old graph


def torch_default_adam(model, recipe):
    """torch.optim.Adam at its defaults (eps=1e-8 added to sqrt(v_hat)) instead of the
    adapter's KerasAdam (eps=1e-7 added to sqrt(v), the "epsilon hat" form)."""
    if not _is_torch(model):
        raise TypeError("torch_default_adam: the model is not a torch twin")
    torch = imports.torch()
    return torch.optim.Adam(model.net.parameters(), lr=recipe.lr,
                            betas=(recipe.beta_1, recipe.beta_2))
