"""Model cost counted from the torch model itself (not estimated by hand).

Forward hooks on the layers that do the multiply-accumulates (Conv2d, Linear) count
MACs on one real forward pass; FLOPs = 2 * MACs. BatchNorm (folded into the conv at export),
ReLU, pooling, resize and concat are element-wise and left out, as the usual counters do.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from edgeseg.models.registry import DEFAULT_INPUT, create_model


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of `input_shape` (N, C, H, W)."""
    total = [0]

    def conv_hook(module: nn.Conv2d, _inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total[0] += output.numel() * kernel

    def linear_hook(module: nn.Linear, _inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        total[0] += output.numel() * module.in_features

    handles = []
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total[0]


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 * MACs) of one forward pass at `input_shape` (N, C, H, W)."""
    return 2 * count_macs(model, input_shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_costs(
    segmenter: Optional[nn.Module] = None,
    classifier: Optional[nn.Module] = None,
    sizes: Optional[Dict[str, Tuple[int, int]]] = None,
) -> Dict[str, Dict[str, float]]:
    """{task: {"params", "gflops", "height", "width"}} for both models (default-config ones when
    not given) at their input sizes (DEFAULT_INPUT when not given), batch 1."""
    sizes = {**DEFAULT_INPUT, **(sizes or {})}
    models = {
        "segmenter": segmenter if segmenter is not None else create_model("resunet"),
        "classifier": classifier if classifier is not None else create_model("classifier"),
    }
    costs: Dict[str, Dict[str, float]] = {}
    for task, model in models.items():
        height, width = sizes[task]
        config = getattr(model, "config", None)  # edgeseg models keep theirs; others: one channel
        channels = int(config["in_channels"]) if isinstance(config, dict) else 1
        costs[task] = {
            "params": count_params(model),
            "gflops": count_flops(model, (1, channels, height, width)) / 1e9,
            "height": height,
            "width": width,
        }
    return costs


def model_summary(
    segmenter: Optional[nn.Module] = None,
    classifier: Optional[nn.Module] = None,
    sizes: Optional[Dict[str, Tuple[int, int]]] = None,
) -> str:
    """Params and GFLOPs of both models and the classifier's share of the segmenter's cost."""
    costs = model_costs(segmenter, classifier, sizes)
    lines: List[str] = []
    for task, c in costs.items():
        lines.append(
            f"{task:<10} input 1x{int(c['height'])}x{int(c['width'])}  params {c['params'] / 1e6:7.3f} M  "
            f"{c['gflops']:8.2f} GFLOPs"
        )
    share = costs["classifier"]["gflops"] / costs["segmenter"]["gflops"]
    lines.append(f"classifier / segmenter FLOPs: {share:.1%}")
    return "\n".join(lines)
