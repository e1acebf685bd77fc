"""The GPU check: is nas_meta's CUDA path right, and how fast is it?  One run, a few minutes.

    PYTHONPATH=. python bench/gpu.py                  # on a machine with CUDA (its own torch >= 2.11)
    PYTHONPATH=. python bench/gpu.py --device cpu     # the same checks on the CPU, CPU figures

It needs torch (and networkx, which torch installs); no ``pip install``.  Optuna, pyyaml and
learn2learn are used when importable: without optuna check 3 is skipped (and says so).  Checks, in
this order, each going on past a failure of the one before:

1. **exactness**: the meta-gradients of vmap-batched second-order MAML, first-order MAML and
   ProtoNet against the per-task loop on the same batch and weights, in float64 (to 1e-6 of the
   largest entry) and float32 (vmap and loop each to 1e-2 of the largest entry of the float64
   gradient: the loop's own float32 rounding reaches 8e-3 here, see ``TOLERANCES``), for Conv-4
   and a DARTS cell network (5-way 1-shot, 4 tasks).
2. **speed**: tasks per second of nas_meta's default execution (vmap on CUDA; on the CPU the
   default there) against the per-task loop (learn2learn's way of running tasks), and against
   learn2learn itself when importable; Conv-4, Omniglot 5-way 1-shot (15 queries per class) and
   20-way 1-shot (5 queries) at ``--meta-batch`` (32, the ``paper`` preset), fp32 and bf16 autocast
   (where the device has bf16), the loop also with ``torch.compile`` (5-way); achieved TFLOP/s
   (torch's FlopCounter count of a step over its time) against this device's matmul TFLOP/s
   measured in the same run; peak memory.
3. **end to end**: ``search`` (smoke preset, 2 trials), ``export --retrain`` and ``evaluate``
   through the CLI on ``--device``, then the same with ``--amp`` (where the device has it).

The last line is ``name=value`` pairs: ``gpu_maml_vs_loop``, ``gpu_fomaml_vs_loop``,
``gpu_protonet_vs_loop`` (tasks/s ratios, 5-way 1-shot, fp32), ``gpu_protonet_util`` (its
achieved over matmul TFLOP/s), ``gpu_exact`` (1 when every exactness check ran and passed),
``gpu_e2e`` (1 when every end-to-end command ran and exited 0).  A check that did not run prints 0.

A healthy run on a modern GPU (targets): exact to the tolerances above; MAML (second order) at
least 5x the per-task loop at meta-batch 32; ProtoNet at least 30% of the measured matmul TFLOP/s.
On a machine without CUDA and without ``--device cpu`` the script says so in one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas_meta.data.sampler import Episodes  # noqa: E402
from nas_meta.learners import MAML, ProtoNet  # noqa: E402
from nas_meta.model import network  # noqa: E402
from nas_meta.spaces.cell import CellSpace  # noqa: E402
from nas_meta.spaces.stacks import ChainSpace  # noqa: E402

try:
    import learn2learn as l2l
except ImportError:
    l2l = None

SIZE = 28
SHAPES = {"5w1s": (5, 1, 15), "20w1s": (20, 1, 5)}  # ways, shots, queries per class
# Of the largest entry.  float32: the per-task loop itself is up to 8e-3 from the float64 gradient
# on these random images (BatchNorm's batch statistics amplify rounding; measured on the CPU), so
# 1e-3 is out of reach for the reference too; float64 is where exactness is shown.
TOLERANCES = {torch.float64: 1e-6, torch.float32: 1e-2}
CONV4 = {"kind": "chain", "depth": 4, "width": 64, "kernel": 3, "pool": "max", "skip": False, "norm": "batch"}


def architectures() -> dict[str, Any]:
    """Conv-4 and one DARTS cell network (the shipped spaces' defaults, read without pyyaml)."""
    conv4 = ChainSpace("conv4", Path("conv4.yaml"), CONV4).build(lambda _name, options: options[0])
    cell = CellSpace("cell", Path("cell.yaml"), {"kind": "cell"}).sample(random.Random(0))
    return {"conv4": conv4, "cell": cell}


def make_batch(ways: int, shots: int, queries: int, tasks: int, device: torch.device, dtype: torch.dtype) -> Episodes:
    g = torch.Generator().manual_seed(ways * 1000 + tasks)
    labels = torch.arange(ways)
    return Episodes(
        torch.rand(tasks, ways * shots, 1, SIZE, SIZE, generator=g, dtype=dtype),
        labels.repeat_interleave(shots).repeat(tasks, 1),
        torch.rand(tasks, ways * queries, 1, SIZE, SIZE, generator=g, dtype=dtype),
        labels.repeat_interleave(queries).repeat(tasks, 1),
        ways,
    ).to(device)


def make_learner(
    algo: str, arch: Any, ways: int, device: torch.device, dtype: torch.dtype, execution: str
) -> nn.Module:
    backbone = network.build(arch, (1, SIZE, SIZE), seed=0)
    if algo == "protonet":
        learner: nn.Module = ProtoNet(backbone, execution=execution)
    else:
        learner = MAML(
            backbone,
            feature_dim=backbone.feature_dim,
            ways=ways,
            task="classification",
            first_order=algo == "fomaml",
            execution=execution,
        )
        with torch.no_grad():  # a non-zero head, so that the whole meta-gradient is compared
            g = torch.Generator().manual_seed(1)
            learner.head.weight.copy_(0.1 * torch.randn(learner.head.weight.shape, generator=g))
    return learner.to(device=device, dtype=dtype)


def meta_gradient(learner: nn.Module, batch: Episodes) -> Tensor:
    loss, _ = learner.loss(batch)
    grads = torch.autograd.grad(loss, [p for p in learner.parameters()], allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. exactness ------------------------------------------------------------------------------


def check_exactness(device: torch.device, report: dict[str, float]) -> None:
    """float64: vmap equals the loop to 1e-6 of the largest entry.  float32: vmap and the loop each
    within 1e-2 of the largest entry of the float64 gradient (both errors printed)."""
    archs = architectures()
    results = []
    for arch_name, arch in archs.items():
        for algo in ("maml", "fomaml", "protonet"):
            batch64 = make_batch(5, 1, 5, 4, device, torch.float64)
            batch32 = Episodes(
                batch64.support_x.float(), batch64.support_y, batch64.query_x.float(), batch64.query_y, batch64.ways
            )
            batched = make_learner(algo, arch, 5, device, torch.float64, "vmap")
            loop = copy.deepcopy(batched)
            loop.execution = "loop"
            want = meta_gradient(loop, batch64)
            scale = want.abs().max().item()

            def error(g: Tensor, want: Tensor = want, scale: float = scale) -> float:
                return (g.double() - want).abs().max().item() / max(scale, 1e-300)

            exact64 = error(meta_gradient(batched, batch64))
            ok64 = exact64 <= TOLERANCES[torch.float64]
            vmap32 = error(meta_gradient(copy.deepcopy(batched).float(), batch32))
            loop32 = error(meta_gradient(copy.deepcopy(loop).float(), batch32))
            ok32 = max(vmap32, loop32) <= TOLERANCES[torch.float32]
            results += [ok64, ok32]
            print(
                f"  {arch_name:5s} {algo:8s} float64 vmap vs loop {exact64:.1e} -> {'exact' if ok64 else 'DIFFERENT'}; "
                f"float32 from float64: vmap {vmap32:.1e}, loop {loop32:.1e} -> {'ok' if ok32 else 'WORSE'}"
            )
    report["gpu_exact"] = float(all(results) and len(results) == len(archs) * 3 * 2)


# --- 2. speed ----------------------------------------------------------------------------------


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def _train_step(learner: nn.Module, optimizer: torch.optim.Optimizer, batch: Episodes, amp: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    with autocast(batch.support_x.device, amp):
        loss, _ = learner.loss(batch)
    loss.backward()
    optimizer.step()


def step_flops(learner: nn.Module, batch: Episodes) -> float:
    """FLOPs of one training step as torch's FlopCounter counts them, on the per-task loop (its
    dispatch mode does not see work on other threads; every execution computes the same ops)."""
    learner.execution = "loop"
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    with FlopCounterMode(display=False) as counter:
        _train_step(learner, optimizer, batch, None)
    return float(counter.get_total_flops())


def time_steps(
    learner: nn.Module, batch: Episodes, device: torch.device, amp: torch.dtype | None, steps: int
) -> tuple[float, float]:
    """(seconds per step, peak memory in GB) of loss + backward + Adam step."""
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for _ in range(2):  # warm-up (and compilation)
        _train_step(learner, optimizer, batch, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        _train_step(learner, optimizer, batch, amp)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else math.nan
    return seconds, peak


class L2LMaml(nn.Module):
    """learn2learn's documented loop: clone, adapt on the support set, query loss, mean over tasks."""

    def __init__(self, learner: MAML, first_order: bool) -> None:
        super().__init__()
        self.maml = l2l.algorithms.MAML(copy.deepcopy(learner.model), lr=learner.inner_lr, first_order=first_order)

    def loss(self, batch: Episodes) -> tuple[Tensor, Tensor]:
        f = nn.functional.cross_entropy
        losses = []
        for t in range(batch.support_x.shape[0]):
            clone = self.maml.clone()
            clone.adapt(f(clone(batch.support_x[t]), batch.support_y[t]))
            losses.append(f(clone(batch.query_x[t]), batch.query_y[t]))
        return torch.stack(losses).mean(), torch.zeros(())


def check_speed(device: torch.device, meta_batch: int, steps: int, compile: bool, report: dict[str, float]) -> None:
    bf16 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    peak32 = matmul_tflops(device, torch.float32)
    peak16 = matmul_tflops(device, torch.bfloat16) if bf16 else math.nan
    print(f"  matmul: {peak32:.3f} TFLOP/s fp32, {peak16:.3f} TFLOP/s bf16 (measured now)")
    arch = architectures()["conv4"]
    print(f"  {'algo':8s} {'task':5s} {'execution':14s} {'tasks/s':>9s} {'TFLOP/s':>8s} {'util':>5s} {'peak GB':>8s}")
    rates: dict[tuple[str, str, str], float] = {}
    for task, (ways, shots, queries) in SHAPES.items():
        batch = make_batch(ways, shots, queries, meta_batch, device, torch.float32)
        for algo in ("maml", "fomaml", "protonet"):
            make = functools.partial(make_learner, algo, arch, ways, device, torch.float32)
            rows: list[tuple[str, Callable[[], nn.Module], torch.dtype | None]] = [
                ("default", functools.partial(make, "auto"), None),
                ("loop", functools.partial(make, "loop"), None),
            ]
            if bf16:
                rows.append(("default+bf16", functools.partial(make, "auto"), torch.bfloat16))
            if compile and task == "5w1s":
                rows.append(("loop+compile", functools.partial(_compiled, make, "loop"), None))
            if l2l is not None and algo != "protonet" and task == "5w1s":
                rows.append(("learn2learn", functools.partial(_l2l, make, algo == "fomaml"), None))
            flops = step_flops(make("loop"), batch)
            for label, build, amp in rows:
                try:
                    seconds, peak = time_steps(build(), batch, device, amp, steps)
                except Exception as exc:  # report and go on: a failed row prints no number
                    print(f"  {algo:8s} {task:5s} {label:14s} FAILED: {type(exc).__name__}: {str(exc)[:100]}")
                    continue
                rate = meta_batch / seconds
                tflops = flops / seconds / 1e12
                peak_tf = peak16 if amp is not None else peak32
                rates[(algo, task, label)] = rate
                if (algo, task, label) == ("protonet", "5w1s", "default"):
                    report["gpu_protonet_util"] = tflops / peak_tf
                print(
                    f"  {algo:8s} {task:5s} {label:14s} {rate:9.1f} {tflops:8.3f} {tflops / peak_tf:5.1%} {peak:8.2f}"
                )
    for algo in ("maml", "fomaml", "protonet"):
        default, loop = rates.get((algo, "5w1s", "default")), rates.get((algo, "5w1s", "loop"))
        report[f"gpu_{algo}_vs_loop"] = default / loop if default and loop else 0.0


def _compiled(make: Callable[[str], nn.Module], execution: str) -> nn.Module:
    learner = make(execution)
    learner.use_compile = True
    return learner


def _l2l(make: Callable[[str], nn.Module], first_order: bool) -> nn.Module:
    learner = make("loop")
    assert isinstance(learner, MAML)
    return L2LMaml(learner, first_order)


# --- 3. end to end ------------------------------------------------------------------------------


def check_end_to_end(device: torch.device, report: dict[str, float]) -> None:
    try:
        import optuna  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        print(f"  skipped: {exc.name or exc} is not importable here (the CLI needs it)")
        return
    amp_options: list[list[str]] = [[]]
    if (device.type == "cuda") or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        amp_options.append(["--amp"])
    ok = True
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in amp_options:
            study = "e2e-amp" if amp else "e2e"
            results = str(Path(tmp) / "results")
            commands = [
                [
                    "search",
                    "--space",
                    "chain",
                    "--preset",
                    "smoke",
                    "--trials",
                    "2",
                    "--study",
                    study,
                    "--results-dir",
                    results,
                    "--device",
                    device.type,
                    *amp,
                ],
                ["export", "--study", study, "--results-dir", results, "--retrain"],
                ["evaluate", "conv4", "--preset", "smoke", "--device", device.type, *amp],
            ]
            for command in commands:
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, str(ROOT / "cli.py"), *command],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                    timeout=600,
                )
                tail = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or [""]
                print(
                    f"  {' '.join(command[:1] + amp):16s} rc {done.returncode}  "
                    f"{time.perf_counter() - start:5.1f} s  {tail[0][:100]}"
                )
                ok = ok and done.returncode == 0
    report["gpu_e2e"] = float(ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="(default: cuda)")
    parser.add_argument("--meta-batch", type=int, default=32, help="tasks per step in the speed check (default: 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (default: 3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (slow to compile)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["exact", "speed", "e2e"], help="checks to skip")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: error: no CUDA device here; run with --device cpu to check the CPU path", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    print(f"device {device} ({name}), torch {torch.__version__}, learn2learn {'yes' if l2l else 'no'}")
    report = {
        k: 0.0
        for k in (
            "gpu_maml_vs_loop",
            "gpu_fomaml_vs_loop",
            "gpu_protonet_vs_loop",
            "gpu_protonet_util",
            "gpu_exact",
            "gpu_e2e",
        )
    }
    checks = [
        ("exact", "1. exactness: vmap against the per-task loop", lambda: check_exactness(device, report)),
        ("speed", "2. speed", lambda: check_speed(device, args.meta_batch, args.steps, not args.no_compile, report)),
        ("e2e", "3. end to end through the CLI", lambda: check_end_to_end(device, report)),
    ]
    for key, title, run in checks:
        print(title)
        if key in args.skip:
            print("  skipped (--skip)")
            continue
        start = time.perf_counter()
        try:
            run()
        except Exception:  # keep going: the next check may still tell something
            traceback.print_exc(limit=3)
        print(f"  ({time.perf_counter() - start:.0f} s)")
    print(" ".join(f"{k}={v:.3g}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
