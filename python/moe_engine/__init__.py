"""MoE Engine: the Mixture-of-Experts layer of LLM inference (C++/CUDA) for Python.

    import moe_engine as me
    layer = me.Layer(me.preset("qwen3-30b-a3b"))      # or me.Layer.from_checkpoint(dir)
    layer.load_random_weights(seed=0)
    y = layer(x, router_logits)                       # PyTorch / NumPy / any DLPack tensors

See docs/USING.md. The compiled part is moe_engine._moe_engine; everything is re-exported here.
"""
import importlib.util as _util
import os as _os
import sys as _sys

# NOTE: PyTorch, when installed, is imported before the compiled module. Shared libraries are
# shared by soname: whichever libnccl.so.2 / libcublas.so.13 a process loads first serves every
# later user. PyTorch needs its own (often newer) NCCL, so the library's copy from the CUDA
# toolkit must not come first: `import torch` after it would fail with "undefined symbol:
# nccl...". MOE_ENGINE_IMPORT_TORCH=0 turns this off (for processes that never use torch).
if ("torch" not in _sys.modules and _os.environ.get("MOE_ENGINE_IMPORT_TORCH", "1") != "0"
        and _util.find_spec("torch") is not None):
    import torch  # noqa: F401

from ._moe_engine import *  # noqa: E402,F401,F403
from ._moe_engine import SHARED_EXPERT, MoeError, __version__  # noqa: E402,F401
