"""From architecture graph to module: the op table (ops.py), the CPU kernels (fused.py), the
compiler's graph passes (fusion.py), the one compiler (network.py), and the weight-sharing
networks: a space's supernet with inherited weights (supernet.py) and the DARTS relaxation of a
cell space (darts.py).

Import from the submodules: ``from nas_meta.model import network``, ``from nas_meta.model.ops import OPS``.
"""
