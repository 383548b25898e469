"""Running a trained network: torch only, so loading a model directory to predict never imports the
training stack (Lightning and its imports cost ~4 s of a `waypost predict` on a model directory)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def predict_network(net: nn.Module, tensors: tuple[torch.Tensor, ...], batch_size: int = 4096) -> np.ndarray:
    """Raw outputs (logits or values) in fp32 on CPU, in eval mode."""
    net.eval()
    n = int(tensors[0].shape[0])
    outs = [net(*(t[i : i + batch_size] for t in tensors)).float() for i in range(0, n, batch_size)]
    return torch.cat(outs).numpy() if outs else np.zeros((0,), dtype=np.float32)
