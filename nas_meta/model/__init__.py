"""From architecture graph to module: the op table (ops.py), the CPU kernels (fused.py), the
compiler's graph passes (fusion.py) and the one compiler (network.py).

Import from the submodules: ``from nas_meta.model import network``, ``from nas_meta.model.ops import OPS``.
"""
