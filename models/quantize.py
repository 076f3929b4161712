"""int8 storage and dynamic quantization of Llama linear layers (per-output-channel, symmetric)."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as quantized_dynamic

logger = logging.getLogger(__name__)

QWEIGHT_SUFFIX = ".qweight"  # int8 (out, in)
SCALE_SUFFIX = ".scale"  # float32 (out,)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: weight (out, in) ~= qweight * scale[:, None]."""
    assert weight.dim() == 2, f"expected a 2-D weight, got {tuple(weight.shape)}"
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
    qweight = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return qweight, scale


def dequantize_rows(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return qweight.float() * scale[:, None]  # (out, in)


def is_quantized_weight(name: str, tensor: torch.Tensor) -> bool:
    """Linear weights, the LM head and the embedding are stored int8; norms stay float32."""
    return tensor.dim() == 2


def quantize_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float state dict -> storage dict with `<name>.qweight` / `<name>.scale` for 2-D weights."""
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if is_quantized_weight(name, tensor):
            qweight, scale = quantize_rows(tensor)
            stored[name + QWEIGHT_SUFFIX], stored[name + SCALE_SUFFIX] = qweight, scale
        else:
            stored[name] = tensor.float().contiguous()
    return stored


def dynamic_linear(qweight: torch.Tensor, scale: torch.Tensor) -> nn.Module:
    """A torch dynamic-quantized Linear (int8 weights, activations quantized per call)."""
    out_features, in_features = qweight.shape
    module = quantized_dynamic.Linear(in_features, out_features, bias_=False, dtype=torch.qint8)
    zero_points = torch.zeros(out_features, dtype=torch.long)
    packed = torch._make_per_channel_quantized_tensor(qweight, scale.double(), zero_points, 0)
    module.set_weight_bias(packed, None)
    return module


def replace_linears(model: nn.Module, stored: dict[str, torch.Tensor]) -> set[str]:
    """Swap every nn.Linear whose weight is in `stored` (as int8) for a dynamic-quantized Linear.

    Returns the state-dict names consumed.
    """
    consumed: set[str] = set()
    for module_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full_name = f"{module_name}.{child_name}" if module_name else child_name
            key = f"{full_name}.weight"
            if isinstance(child, nn.Linear) and key + QWEIGHT_SUFFIX in stored:
                setattr(module, child_name, dynamic_linear(stored[key + QWEIGHT_SUFFIX], stored[key + SCALE_SUFFIX]))
                consumed.update({key + QWEIGHT_SUFFIX, key + SCALE_SUFFIX})
    return consumed


def module_bytes(model: nn.Module) -> int:
    """Bytes held by parameters, buffers and packed dynamic-quantized weights (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    tensors = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        if isinstance(module, quantized_dynamic.Linear):
            tensors.append(module.weight())
    for tensor in tensors:
        if tensor.is_quantized:
            total += tensor.numel() * tensor.element_size() + tensor.shape[0] * 8
            continue
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


class Int8Embedding(nn.Module):
    """Embedding lookup from int8 rows + float32 per-row scales (dequantizes only the rows used)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        assert qweight.dtype == torch.int8 and scale.shape == (qweight.shape[0],), "bad int8 embedding"
        self.register_buffer("qweight", qweight)  # (V, C) int8
        self.register_buffer("scale", scale.float())  # (V,)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[input_ids].float() * self.scale[input_ids].unsqueeze(-1)  # (B, T, C)
