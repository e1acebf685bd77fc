"""Learner throughput: nas_meta MAML / FOMAML / ProtoNet against learn2learn's MAML, side by side.

Omniglot 5-way 1-shot shapes (1x28x28, 5 support + 75 query per task), meta-batch 8, Conv-4 with
64 channels (BatchNorm with batch statistics), 2 CPU threads: nas_meta trains the conv4 space as
its compiler builds it and its learners run it (NHWC images, BatchNorm + max-pool fused, the first
conv fused with them, pool before ReLU, tasks on threads: all exact up to float rounding),
learn2learn the papers' nn.Sequential with the same weights, as its documentation runs it.  Every
method trains (loss, backward, Adam step) on the same batch from the same initial weights; the
meta-gradients of nas_meta and learn2learn are checked equal before any timing.  Methods run in
interleaved rounds and the medians are quoted (the machines here are noisy: +-15% between runs).
Achieved GFLOP/s are torch.utils.flop_counter counts over measured time, against the measured
fp32 matmul GFLOP/s of this machine in the same rounds.

learn2learn (0.2.0) lives in its own venv (it needs numpy<2 and gym); make it once with
``bash bench/setup_l2l.sh``, then run from the repository root:

    bench/.venv-l2l/bin/python -m bench.learners          # with learn2learn
    .venv/bin/python -m bench.learners                                  # nas_meta only

Rows: ``maml``/``fomaml``/``protonet`` are nas_meta's defaults (on a multi-core CPU the tasks run
on worker threads, one core each); ``/loop`` the single-threaded-task loop with intra-op threads
(what learn2learn does); ``+c`` (with ``--compile``) torch.compile of the once-differentiated
passes (slower than eager on the 2-core CPU, measured).  Meta-gradients
are compared in float64 (see check_gradients for why not float32).  ``--device cuda`` runs the
same benchmark on a GPU (nas_meta batches tasks with vmap there).

``--amp`` adds each learner under the trainer's bf16 autocast (``+bf16``; a CPU with AVX-512 BF16
or AMX, or CUDA; refused in one line elsewhere) and ``<learner>_bf16_vs_fp32`` ratios to the
last line.  The last line is ``maml_vs_l2l=<ratio> fomaml_vs_l2l=<ratio> protonet_flops_util=<ratio>``; with
``--compile`` it quotes the compiled learners and the line before it the eager defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bench.reference import L2LMaml, episodes, meta_gradient, sync
from nas_meta.data.sampler import Episodes
from nas_meta.errors import ConfigError
from nas_meta.learners import MAML, ProtoNet, resolve_device
from nas_meta.learners.train import amp_dtype
from nas_meta.model import network
from nas_meta.model.ops import BatchNorm
from nas_meta.spaces import load_space

try:
    import learn2learn as l2l
except ImportError:  # the project's venv: nas_meta only
    l2l = None

WAYS, SHOTS, QUERIES, SIZE = 5, 1, 15, 28


class Conv4(nn.Sequential):
    """The Conv-4 of the MAML and ProtoNet papers: 4 x (conv3x3-BN-ReLU-maxpool2), 64 channels."""

    def __init__(self, channels: int = 64) -> None:
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1),
                BatchNorm(channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        super().__init__(*layers, nn.Flatten())
        self.feature_dim = channels  # 28 -> 14 -> 7 -> 3 -> 1


def make_batch(tasks: int, device: torch.device, seed: int = 0) -> Episodes:
    return episodes(WAYS, SHOTS, QUERIES, tasks, device, seed=seed, size=SIZE)


def make_models(seed: int, device: torch.device) -> tuple[nn.Sequential, nn.Sequential]:
    """(nas_meta's, learn2learn's) backbone + the same random (non-zero) head, with equal weights.

    nas_meta's backbone is what a search trains: the conv4 space compiled by network.build (its
    compiler pools before ReLU, which computes the same numbers).  learn2learn's is the papers'
    nn.Sequential (conv, BatchNorm, ReLU, max-pool), holding a copy of the same weights.
    """
    backbone = network.build(load_space("conv4").sample(random.Random(0)), (1, SIZE, SIZE), seed=seed)
    paper = Conv4()
    with torch.no_grad():
        for theirs, ours in zip(paper.parameters(), backbone.parameters(), strict=True):
            theirs.copy_(ours)
    torch.manual_seed(seed)
    head = nn.Linear(backbone.feature_dim, WAYS)
    ours = nn.Sequential(backbone, head).to(device)
    return ours, nn.Sequential(paper, copy.deepcopy(head)).to(device)


def nas_meta_maml(model: nn.Sequential, *, first_order: bool, lr: float, compile: bool = False) -> MAML:
    """nas_meta's MAML on a copy of ``model``, with its defaults (NHWC on the CPU); ``compile``: torch.compile."""
    learner = MAML(
        copy.deepcopy(model[0]),
        feature_dim=64,
        ways=WAYS,
        task="classification",
        inner_lr=lr,
        first_order=first_order,
        compile=compile,
    )
    learner.head.load_state_dict(model[1].state_dict())
    return learner


def _relative_error(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs() / (b.abs() + 1e-3 * b.abs().max())).max().item()


def check_gradients(
    model: nn.Sequential, l2l_model: nn.Sequential, batch: Episodes, lr: float, *, compile: bool
) -> None:
    """Exit unless nas_meta's meta-gradients equal learn2learn's to rtol 1e-4 in float64.

    float64, because in float32 BatchNorm's batch statistics amplify rounding to ~1e-3 relative
    in some entries: another summation order (a fused kernel, 1 thread instead of 2) moves the
    float32 meta-gradient that much, learn2learn's included.  The float32 deviations of both
    from the float64 reference are printed for comparison.
    """

    def cast(dtype: torch.dtype) -> tuple[nn.Sequential, nn.Sequential, Episodes]:
        b = Episodes(batch.support_x.to(dtype), batch.support_y, batch.query_x.to(dtype), batch.query_y, batch.ways)
        return copy.deepcopy(model).to(dtype), copy.deepcopy(l2l_model).to(dtype), b

    (m64, l64, b64), (m32, l32, b32) = cast(torch.float64), cast(torch.float32)
    for first_order in (False, True):
        name = "fomaml" if first_order else "maml"
        ref = meta_gradient(L2LMaml(l64, first_order=first_order, lr=lr, steps=1), b64)
        variants = [False, True] if compile else [False]
        for compiled in variants:
            start = time.perf_counter()
            ours = meta_gradient(
                nas_meta_maml(m64, first_order=first_order, lr=lr, compile=compiled).to(torch.float64), b64
            )
            ok = torch.allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item())
            label = name + ("+c" if compiled else "")
            print(
                f"meta-gradient {label} vs learn2learn, float64: max rel error {_relative_error(ours, ref):.1e} -> "
                f"{'equal' if ok else 'DIFFERENT'} ({time.perf_counter() - start:.0f} s)"
            )
            if not ok:
                raise SystemExit(f"{label}: meta-gradient differs from learn2learn's; refusing to time it")
        ours32 = meta_gradient(nas_meta_maml(m32, first_order=first_order, lr=lr), b32).double()
        theirs32 = meta_gradient(L2LMaml(l32, first_order=first_order, lr=lr, steps=1), b32).double()
        print(
            "  float32 rounding, max rel error from the float64 reference: "
            f"nas_meta {_relative_error(ours32, ref):.1e}, learn2learn {_relative_error(theirs32, ref):.1e}"
        )


def train_step(learner: nn.Module, optimizer: torch.optim.Optimizer, batch: Episodes) -> None:
    optimizer.zero_grad(set_to_none=True)
    amp = getattr(learner, "bench_amp", None)  # the +bf16 rows: the trainer's autocast
    context = torch.autocast(batch.support_x.device.type, dtype=amp) if amp else contextlib.nullcontext()
    with context:
        loss, _ = learner.loss(batch)
    loss.backward()
    optimizer.step()


def count_flops(fn: Callable[[], None], learner: nn.Module) -> int:
    """FLOPs of ``fn``, run with the single-threaded loop: FlopCounterMode sees the calling thread only."""
    execution, learner.execution = learner.execution, "loop"
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        learner.execution = execution
    return counter.get_total_flops()


def matmul_round(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of one n^3 matmul (2 n^3 flops) in ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    a @ b
    sync(device)
    return 2 * n**3 / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median quoted)")
    parser.add_argument("--steps", type=int, default=2, help="outer steps per method per round")
    parser.add_argument("--inner-lr", type=float, default=0.4)
    parser.add_argument("--matmul", type=int, default=2048, help="n of the n^3 fp32 reference matmul")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the torch.compile'd learners (+c); the last line then quotes them",
    )
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="run nas_meta's backbone op by op (Backbone.fuse(False)): the fused CPU kernels' share of the speed",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="also time each learner under --amp's autocast (+bf16 rows; bf16 CPUs or CUDA); "
        "the last line gains <learner>_bf16_vs_fp32",
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a log
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        amp = amp_dtype(device, args.amp)
    except ConfigError as exc:
        print(f"learners.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    batch = make_batch(args.meta_batch, device)
    model, l2l_model = make_models(0, device)
    if args.no_fuse:
        model[0].fuse(False)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"learn2learn {l2l.__version__ if l2l else 'not importable (run in bench/.venv-l2l)'}"
    )
    print(f"shapes: {args.meta_batch} tasks x {WAYS}-way {SHOTS}-shot {QUERIES}-query, 1x{SIZE}x{SIZE}, Conv-4/64")
    if hasattr(os, "getloadavg"):
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    methods: dict[str, nn.Module] = {
        "maml": nas_meta_maml(model, first_order=False, lr=args.inner_lr),
        "fomaml": nas_meta_maml(model, first_order=True, lr=args.inner_lr),
        "protonet": ProtoNet(copy.deepcopy(model[0])),
    }
    if device.type == "cpu" and args.threads > 1:  # the default runs tasks on threads: show the loop too
        for name in ("maml", "fomaml"):
            methods[name + "/loop"] = nas_meta_maml(model, first_order=name == "fomaml", lr=args.inner_lr)
            methods[name + "/loop"].execution = "loop"
        methods["protonet/loop"] = ProtoNet(copy.deepcopy(model[0]), execution="loop")
    if args.compile:
        methods["maml+c"] = nas_meta_maml(model, first_order=False, lr=args.inner_lr, compile=True)
        methods["fomaml+c"] = nas_meta_maml(model, first_order=True, lr=args.inner_lr, compile=True)
        methods["protonet+c"] = ProtoNet(copy.deepcopy(model[0]), compile=True)
    if amp is not None:
        for name in ("maml", "fomaml", "protonet"):
            methods[name + "+bf16"] = copy.deepcopy(methods[name])
            methods[name + "+bf16"].bench_amp = amp
    if l2l is not None:
        methods["l2l_maml"] = L2LMaml(l2l_model, first_order=False, lr=args.inner_lr, steps=1)
        methods["l2l_fomaml"] = L2LMaml(l2l_model, first_order=True, lr=args.inner_lr, steps=1)
        check_gradients(model, l2l_model, batch, args.inner_lr, compile=args.compile)

    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in methods.items()}
    for name, m in methods.items():  # warm-up: compilation, oneDNN primitives, allocator, lazy inits
        start = time.perf_counter()
        train_step(m, optimizers[name], batch)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s")
    # The same computation has the same count, compiled or not, ours or learn2learn's.
    counted = {
        name: count_flops(lambda m=methods[name], o=optimizers[name]: train_step(m, o, batch), methods[name])
        for name in ("maml", "fomaml", "protonet")
    }
    flops = {
        name: counted[name.removesuffix("+c").removesuffix("+bf16").removesuffix("/loop").removeprefix("l2l_")]
        for name in methods
    }
    rates: dict[str, list[float]] = {name: [] for name in methods}
    matmul: list[float] = []
    matmul_amp: list[float] = []  # the bf16 kernels' own ceiling, beside the fp32 one
    for _ in range(args.rounds):
        matmul.append(matmul_round(args.matmul, device))
        if amp is not None:
            matmul_amp.append(matmul_round(args.matmul, device, amp))
        for name, m in methods.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(m, optimizers[name], batch)
            sync(device)
            rates[name].append(args.steps * args.meta_batch / (time.perf_counter() - start))
        matmul.append(matmul_round(args.matmul, device))

    peak = statistics.median(matmul)
    print(f"fp32 matmul {args.matmul}^3: {peak:.1f} GFLOP/s (median of {len(matmul)})")
    if matmul_amp:
        print(
            f"{str(amp).removeprefix('torch.')} matmul {args.matmul}^3: {statistics.median(matmul_amp):.1f} GFLOP/s "
            f"(median of {len(matmul_amp)}; util below is against the fp32 figure)"
        )
    print(f"{'method':<14}{'tasks/s':>9}{'min':>8}{'max':>8}{'GFLOP/step':>12}{'GFLOP/s':>9}{'util':>7}")
    median = {name: statistics.median(r) for name, r in rates.items()}
    util = {}
    for name in methods:
        gflops = flops[name] / 1e9 * median[name] / args.meta_batch
        util[name] = gflops / peak
        print(
            f"{name:<14}{median[name]:>9.1f}{min(rates[name]):>8.1f}{max(rates[name]):>8.1f}"
            f"{flops[name] / 1e9:>12.2f}{gflops:>9.1f}{util[name]:>7.0%}"
        )
    if hasattr(os, "getloadavg"):
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    nan = float("nan")
    suffix = "+c" if args.compile else ""
    maml_ratio = median["maml" + suffix] / median["l2l_maml"] if l2l else nan
    fomaml_ratio = median["fomaml" + suffix] / median["l2l_fomaml"] if l2l else nan
    if args.compile:
        print(
            f"eager: maml_vs_l2l={median['maml'] / median['l2l_maml'] if l2l else nan:.2f} "
            f"fomaml_vs_l2l={median['fomaml'] / median['l2l_fomaml'] if l2l else nan:.2f} "
            f"protonet_flops_util={util['protonet']:.2f}; the last line quotes the compiled learners (+c)"
        )
    protonet_util = util["protonet" + suffix]
    bf16 = "".join(
        f" {name}_bf16_vs_fp32={median[name + '+bf16'] / median[name]:.2f}"
        for name in ("maml", "fomaml", "protonet")
        if name + "+bf16" in median
    )
    if matmul_amp:
        bf16 += f" matmul_bf16_vs_fp32={statistics.median(matmul_amp) / peak:.2f}"
    print(
        f"maml_vs_l2l={maml_ratio:.2f} fomaml_vs_l2l={fomaml_ratio:.2f} protonet_flops_util={protonet_util:.2f}{bf16}"
    )


if __name__ == "__main__":
    main()
