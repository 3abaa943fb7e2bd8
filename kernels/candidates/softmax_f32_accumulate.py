"""Softmax computed by F.softmax with float32 accumulation in one call (no separate upcast).
(exp(x - logsumexp(x)) was tried here and is rightly rejected: on a row holding +Inf it gives
[0, ..., NaN] where the reference gives all NaN.)"""

import torch

OP = "softmax"
DTYPES = ("float32", "bfloat16", "float16")
DETERMINISTIC = True


def kernel(x):
    return torch.nn.functional.softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)
