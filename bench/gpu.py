"""The GPU check: is nas_meta's CUDA path right, and how fast is it?  One run, a few minutes.

    python -m bench.gpu                  # on a machine with CUDA (its own torch >= 2.11)
    python -m bench.gpu --device cpu     # the same checks on the CPU, CPU figures

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
   measured beside it: per algorithm and task, ``--rounds`` rounds of [matmul fp32 (and bf16),
   every row], each row's figures the medians over the rounds and its utilisation the median of
   each round's achieved over that round's matmul (clocks and other load change between rounds,
   not within one); peak memory.
3. **end to end**: ``search`` (smoke preset, 2 trials), ``export --retrain`` and ``evaluate``
   through the CLI on ``--device``, then the same with ``--amp`` (where the device has it).

The last line is ``name=value`` pairs: ``gpu_maml_vs_loop``, ``gpu_fomaml_vs_loop``,
``gpu_protonet_vs_loop`` (tasks/s ratios, 5-way 1-shot, fp32), ``gpu_protonet_util`` (its
achieved over matmul TFLOP/s), ``gpu_exact`` (1 when every exactness check ran and passed),
``gpu_e2e`` (1 when every end-to-end command ran and exited 0).  A check that did not run prints 0.
Exactness and the end-to-end commands must hold: when ``gpu_exact`` or ``gpu_e2e`` is not 1 (and
was not skipped with ``--skip``), one line on stderr names them and the exit code is 1.

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
import statistics
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

from bench.reference import L2LMaml, episodes, meta_gradient, sync
from nas_meta.data.sampler import Episodes
from nas_meta.learners import MAML, ProtoNet
from nas_meta.model import network
from nas_meta.spaces.cell import CellSpace
from nas_meta.spaces.stacks import ChainSpace

ROOT = Path(__file__).resolve().parent.parent

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
    return episodes(ways, shots, queries, tasks, device, seed=ways * 1000 + tasks, size=SIZE, dtype=dtype)


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


def time_per_call(
    work: Callable[[], Any], reps: int, sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds per call of ``work`` over ``reps`` calls, the device synchronised at both ends."""
    sync()
    start = clock()
    for _ in range(reps):
        work()
    sync()
    return (clock() - start) / reps


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The matmul TFLOP/s of ``device`` now: operands made for this call and freed after it, so
    that they are not in the peak memory of the rows timed between two of these."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    seconds = time_per_call(lambda: a @ b, 10 if device.type == "cuda" else 3, functools.partial(sync, device))
    return 2 * n**3 / seconds / 1e12


def measure_rounds(
    peaks: dict[str, Callable[[], float]],
    rows: dict[str, tuple[Callable[[], float], str]],
    rounds: int,
    failed: dict[str, str] | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """Interleaved timing: ``rounds`` rounds of [every peak, then every row], so that each row is
    measured under the conditions (clocks, temperature, other work on the machine) of the peak it
    is compared with.  ``peaks``: name -> TFLOP/s now; ``rows``: label -> (seconds per step now,
    the name of its peak).  Returns label -> [(seconds, that round's peak TFLOP/s)], one pair per
    round the row ran in.  A row that raises is left out of the rounds after (its error in
    ``failed``); the others go on."""
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in rows}
    failed = {} if failed is None else failed
    for _ in range(rounds):
        peak_now = {name: measure() for name, measure in peaks.items()}
        for label, (measure, peak_name) in rows.items():
            if label in failed:
                continue
            try:
                seconds = measure()
            except Exception as exc:  # report and go on: a failed row prints no number
                failed[label] = f"{type(exc).__name__}: {str(exc)[:100]}"
                continue
            samples[label].append((seconds, peak_now[peak_name]))
    return samples


def row_figures(flops: float, samples: list[tuple[float, float]]) -> dict[str, float]:
    """A row's medians over its rounds: seconds per step, achieved TFLOP/s, the matmul peak of
    the same rounds, and utilisation (the median of each round's achieved over that round's
    peak).  Nothing is clamped: a utilisation above 1 is a measurement to look into (the FLOP
    count, or the row using faster arithmetic than the matmul, e.g. TF32 convolutions)."""
    seconds = statistics.median(s for s, _ in samples)
    return {
        "seconds": seconds,
        "tflops": flops / seconds / 1e12,
        "peak": statistics.median(p for _, p in samples),
        "util": statistics.median(flops / s / 1e12 / p for s, p in samples),
    }


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


def timed_row(
    learner: nn.Module, batch: Episodes, device: torch.device, amp: torch.dtype | None, steps: int, memory: list[float]
) -> Callable[[], float]:
    """Warm ``learner`` up (and compile it) now; returns the timing of one round: seconds per step
    of loss + backward + Adam step over ``steps`` steps.  Each round's peak memory in GB is
    appended to ``memory``."""
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for _ in range(2):  # warm-up (and compilation)
        _train_step(learner, optimizer, batch, amp)

    def one_round() -> float:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_per_call(
            lambda: _train_step(learner, optimizer, batch, amp), steps, functools.partial(sync, device)
        )
        memory.append(torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else math.nan)
        return seconds

    return one_round


def check_speed(
    device: torch.device, meta_batch: int, steps: int, rounds: int, compile: bool, report: dict[str, float]
) -> None:
    """Per shape and algorithm, the rows and the matmul peaks timed in interleaved rounds
    (:func:`measure_rounds`); medians over the rounds, utilisation against the peak measured
    beside each row."""
    bf16 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    peaks: dict[str, Callable[[], float]] = {"fp32": functools.partial(matmul_tflops, device, torch.float32)}
    if bf16:
        peaks["bf16"] = functools.partial(matmul_tflops, device, torch.bfloat16)
    print(
        f"  {rounds} rounds of [matmul {', '.join(peaks)}, every row of the algorithm and task], "
        f"{steps} timed step(s) per row and round; medians; util against the matmul of the same rounds"
    )
    arch = architectures()["conv4"]
    print(
        f"  {'algo':8s} {'task':5s} {'execution':14s} {'tasks/s':>9s} {'TFLOP/s':>8s} "
        f"{'matmul':>8s} {'util':>6s} {'peak GB':>8s}"
    )
    rates: dict[tuple[str, str, str], float] = {}
    for task, (ways, shots, queries) in SHAPES.items():
        batch = make_batch(ways, shots, queries, meta_batch, device, torch.float32)
        for algo in ("maml", "fomaml", "protonet"):
            make = functools.partial(make_learner, algo, arch, ways, device, torch.float32)
            builds: list[tuple[str, Callable[[], nn.Module], torch.dtype | None]] = [
                ("default", functools.partial(make, "auto"), None),
                ("loop", functools.partial(make, "loop"), None),
            ]
            if bf16:
                builds.append(("default+bf16", functools.partial(make, "auto"), torch.bfloat16))
            if compile and task == "5w1s":
                builds.append(("loop+compile", functools.partial(_compiled, make, "loop"), None))
            if l2l is not None and algo != "protonet" and task == "5w1s":
                builds.append(("learn2learn", functools.partial(_l2l, make, algo == "fomaml"), None))
            flops = step_flops(make("loop"), batch)
            failed: dict[str, str] = {}
            memory: dict[str, list[float]] = {}
            rows: dict[str, tuple[Callable[[], float], str]] = {}
            for label, build, amp in builds:
                memory[label] = []
                try:
                    rows[label] = (timed_row(build(), batch, device, amp, steps, memory[label]), _peak_of(amp))
                except Exception as exc:  # report and go on: a failed row prints no number
                    failed[label] = f"{type(exc).__name__}: {str(exc)[:100]}"
            samples = measure_rounds(peaks, rows, rounds, failed)
            for label, _build, _amp in builds:
                if not samples.get(label):
                    print(f"  {algo:8s} {task:5s} {label:14s} FAILED: {failed.get(label, 'no round ran')}")
                    continue
                fig = row_figures(flops, samples[label])
                rate = meta_batch / fig["seconds"]
                rates[(algo, task, label)] = rate
                if (algo, task, label) == ("protonet", "5w1s", "default"):
                    report["gpu_protonet_util"] = fig["util"]
                print(
                    f"  {algo:8s} {task:5s} {label:14s} {rate:9.1f} {fig['tflops']:8.3f} {fig['peak']:8.3f} "
                    f"{fig['util']:6.1%} {max(memory[label]):8.2f}"
                    + ("  (above the matmul measured beside it)" if fig["util"] > 1 else "")
                    + (f"  (failed in a later round: {failed[label]})" if label in failed else "")
                )
    for algo in ("maml", "fomaml", "protonet"):
        default, loop = rates.get((algo, "5w1s", "default")), rates.get((algo, "5w1s", "loop"))
        report[f"gpu_{algo}_vs_loop"] = default / loop if default and loop else 0.0


def _peak_of(amp: torch.dtype | None) -> str:
    return "bf16" if amp is not None else "fp32"


def _compiled(make: Callable[[str], nn.Module], execution: str) -> nn.Module:
    learner = make(execution)
    learner.use_compile = True
    return learner


def _l2l(make: Callable[[str], nn.Module], first_order: bool) -> nn.Module:
    learner = make("loop")
    assert isinstance(learner, MAML)
    return L2LMaml(learner.model, first_order=first_order, lr=learner.inner_lr)


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


# The checks that must hold for the run to pass (their report key -> the check's --skip name and
# title): speed figures are reported against targets, but a wrong gradient or a failing command is
# a failed run, whatever the speed.
MUST_HOLD = {"gpu_exact": ("exact", "exactness"), "gpu_e2e": ("e2e", "end to end")}


def verdict(report: dict[str, float], skipped: list[str]) -> tuple[int, str]:
    """(exit code, line for stderr): 0 and "" when every must-hold check (MUST_HOLD) that was not
    skipped with --skip reports 1; else 1 and one line naming each of them that did not, a check
    that could not run failing as one that ran and failed does."""
    failed = [
        f"{key}={report.get(key, 0.0):.3g} ({title})"
        for key, (name, title) in MUST_HOLD.items()
        if name not in skipped and report.get(key, 0.0) != 1.0
    ]
    if not failed:
        return 0, ""
    return 1, "gpu.py: FAILED: " + ", ".join(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="(default: cuda)")
    parser.add_argument("--meta-batch", type=int, default=32, help="tasks per step in the speed check (default: 32)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row and round (default: 2)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of [matmul peaks, rows] in the speed check (default: 5)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (slow to compile)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["exact", "speed", "e2e"], help="checks to skip")
    args = parser.parse_args(argv)
    for flag in ("meta_batch", "steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
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
        (
            "speed",
            "2. speed",
            lambda: check_speed(device, args.meta_batch, args.steps, args.rounds, not args.no_compile, report),
        ),
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
    code, line = verdict(report, args.skip)
    if line:
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
