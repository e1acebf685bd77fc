"""Graph passes of the compiler: where the compiled network may run ops in another order or fused.

Plain functions of the architecture graph (no torch): which activation may move after the
max-pool it feeds, which BatchNorm feeds only a 2x2 max-pool (fused.batch_norm_max_pool), and
which conv feeds only such a norm (fused.conv_batch_norm_max_pool).  The graph, its fingerprint
and the state_dict never change; only the order of computation does.
"""

from __future__ import annotations

import networkx as nx

__all__ = ["MONOTONE_ACTIVATIONS", "pool_first_pairs", "norm_pool_pairs", "conv_before"]

# Elementwise non-decreasing activations commute with max-pooling: act(max(x)) = max(act(x)).
# Where such an activation feeds only a 2x2 max-pool, the compiled network pools first and
# activates the pooled map (Conv-4's ReLU -> max-pool): identical outputs and gradients of every
# order (max and these activations are exact, and the activation keeps the window's argmax, or
# ReLU zeroes its gradient either way), at a quarter of the activation's cost, forward and
# backward.  The graph, its fingerprint and the state_dict are unchanged.
MONOTONE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu"})


def pool_first_pairs(arch: nx.DiGraph, output: str) -> dict[str, str]:
    """{max-pool node: the activation node right before it} for every pair that may be swapped."""
    pairs = {}
    for node, attrs in arch.nodes(data=True):
        if attrs.get("op") not in MONOTONE_ACTIVATIONS or node == output or arch.out_degree(node) != 1:
            continue
        (pool,) = arch.successors(node)
        if arch.nodes[pool].get("op") == "max_pool_2x2" and arch.in_degree(pool) == 1:
            pairs[pool] = node
    return pairs


def norm_pool_pairs(arch: nx.DiGraph, output: str, pool_first: dict[str, str]) -> dict[str, str]:
    """{max-pool node: the batch-norm node feeding it}, directly or through its moved activation.

    The norm must feed nothing else: its full-size output is never made (fused.batch_norm_max_pool).
    """
    pairs = {}
    for pool, attrs in arch.nodes(data=True):
        if attrs.get("op") != "max_pool_2x2" or arch.in_degree(pool) != 1:
            continue
        (before,) = arch.predecessors(pool)
        if before in pool_first.values():
            if arch.in_degree(before) != 1:
                continue
            (before,) = arch.predecessors(before)
        if arch.nodes[before].get("op") == "batch_norm" and arch.out_degree(before) == 1 and before != output:
            pairs[pool] = before
    return pairs


def conv_before(arch: nx.DiGraph, norm_pool: dict[str, str]) -> dict[str, str]:
    """{max-pool node: the node before its fused norm}, where that node feeds nothing else."""
    pairs = {}
    for pool, norm in norm_pool.items():
        if arch.in_degree(norm) != 1:
            continue
        (before,) = arch.predecessors(norm)
        if arch.out_degree(before) == 1:  # its full-size output is never made
            pairs[pool] = before
    return pairs
