"""Benchmark: the project's defaults against the classic Keras recipe, in one run on one machine.

For each seed it trains, each in a fresh process (so start-up and data loading count):
  baseline   the classic "Simple MNIST convnet" recipe (mnistlab/baseline.py), 15 epochs, float32
  cnn        python train_cnn.py                 (defaults)
  dense      python train_dense.py               (defaults)
  cnn-best   python train_cnn.py --preset best   (unless --skip-best)
then times inference of every model and prints a markdown table, writes results/benchmark.json and draws
results/benchmark.png (test accuracy against training seconds, every run).

    python benchmark.py --data data/mnist.npz              # the full run (each run's time: docs/performance.md)
    python benchmark.py --skip-best                        # without the long --preset best runs
    python benchmark.py --precision mixed_bfloat16         # on CPUs with AMX-BF16 units (recent Xeons)
    python benchmark.py --quick                            # smoke run on a slice

The training scripts run unchanged, through mnistlab/tracked.py, which calls their main() with two more Keras
callbacks: one measures test accuracy after every epoch (for "seconds until 99%"), and those evaluations are not
counted in any time; the other times fit() as a whole.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnistlab import UserError, cli

ROOT = Path(__file__).resolve().parent
TARGETS = {"cnn": 0.99, "cnn-best": 0.99, "baseline": 0.99, "dense": 0.98}  # "time to first reach" thresholds
FP32_FLOPS_PER_CYCLE = 32  # per core: one AVX-512 FMA unit (16 lanes × 2) — an estimate, stated as such


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument("--data", metavar="PATH", default=None, help="a Keras-style .npz (default: as the scripts)")
    parser.add_argument(
        "--results-dir", default=cli.DEFAULT_RESULTS_DIR, help="where the report goes (default: %(default)s)"
    )
    parser.add_argument(
        "--seeds", type=cli.non_negative_int, nargs="+", default=[1, 2, 3], help="seeds (default: 1 2 3)"
    )
    parser.add_argument("--skip-best", action="store_true", help="leave out the long --preset best runs")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("cnn", "dense", "cnn-best"),
        help="train only these beside the baseline, which every ratio is measured against (default: all)",
    )
    parser.add_argument(
        "--precision",
        choices=cli.PRECISIONS,
        default="float32",
        help="the training scripts' --precision (the classic baseline is float32 as published); mixed_bfloat16 "
        "is faster on CPUs with AMX-BF16 units (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: one seed, 6,000 training images, 1–2 epochs, no best preset"
    )
    return parser.parse_args(argv)


def configurations(quick: bool, skip_best: bool) -> dict[str, list[str]]:
    """name -> extra flags for the training command."""
    small = ["--train-size", "6000", "--epochs", "2"] if quick else []
    configs = {"baseline": ["--epochs", "1", "--train-size", "6000"] if quick else [], "cnn": small, "dense": small}
    if not (quick or skip_best):
        configs["cnn-best"] = ["--preset", "best"]
    return configs


def command(
    name: str, flags: list[str], seed: int, work: Path, *, data: str | None, precision: str
) -> list[str]:
    data_flags = ["--data", data] if data else []
    if name == "baseline":
        return [
            sys.executable,
            "-m",
            "mnistlab.baseline",
            "--seed",
            str(seed),
            "--out",
            str(work / "run.json"),
            "--model-out",
            str(work / "model.keras"),
            *data_flags,
            *flags,
        ]
    script = "train_cnn.py" if name.startswith("cnn") else "train_dense.py"
    return [  # the script, unchanged, with a test-accuracy callback added after its own (mnistlab/tracked.py)
        sys.executable,
        "-m",
        "mnistlab.tracked",
        script,
        str(work / "tracked.json"),
        "--seed",
        str(seed),
        "--precision",
        precision,
        "--models-dir",
        str(work),
        "--results-dir",
        str(work),
        *data_flags,
        *flags,
    ]


def train_once(
    name: str,
    flags: list[str],
    seed: int,
    data: str | None,
    precision: str,
    *,
    inference: bool = True,
) -> dict[str, Any]:
    """Run one training process; return its record plus wall-clock and per-epoch test accuracy (and, with
    ``inference``, the saved model's inference timings)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        result = subprocess.run(
            command(name, flags, seed, work, data=data, precision=precision),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise UserError(f"{name} (seed {seed}) failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        if name == "baseline":
            record = json.loads((work / "run.json").read_text())
            model_path = work / "model.keras"
        else:
            stem = "cnn" if name.startswith("cnn") else "dense"
            record = json.loads((work / f"{stem}_run.json").read_text())
            history = json.loads((work / f"{stem}_history.json").read_text())["epochs"]
            record.update(json.loads((work / "tracked.json").read_text()))
            record["epoch_seconds"] = [row["epoch_seconds"] for row in history]
            model_path = work / f"{stem}.keras"
        record["wall_seconds"] = wall - record["test_eval_seconds"]  # the benchmark's own test evaluations excluded
        if inference:
            record.update(time_inference(model_path, name, data))
    return record


def time_inference(model_path: Path, name: str, data_path: str | None) -> dict[str, float]:
    """Throughput at a large batch and one-image latency (compare.py's own timing, Keras' predict_on_batch); for
    the baseline also its evaluate()."""
    import compare
    from mnistlab import data

    dataset = data.load(data_path)
    model = compare.load_model(str(model_path), made_by="benchmark.py")
    images_per_second, latency_ms = compare.speed(model, dataset.x_test[..., None].astype("float32"))
    timings = {"images_per_second": images_per_second, "latency_ms": latency_ms}
    if name == "baseline":  # the reference the target is stated against: evaluate() at its default batch of 32
        images = dataset.x_test[..., None].astype("float32")
        model.evaluate(images[:512], dataset.y_test[:512], verbose=0)
        started = time.perf_counter()
        model.evaluate(images, dataset.y_test, verbose=0)
        timings["evaluate_images_per_second"] = len(images) / (time.perf_counter() - started)
    return timings


def first_reach(record: dict[str, Any], target: float) -> float | None:
    """Training seconds until test accuracy first reached ``target`` (None if it never did)."""
    elapsed = 0.0
    for seconds, accuracy in zip(record["epoch_seconds"], record["epoch_test_accuracy"], strict=True):
        elapsed += seconds
        if accuracy >= target:
            return elapsed
    return None


def training_gflops(name: str, record: dict[str, Any]) -> float:
    """Achieved GFLOP/s in training: forward FLOPs per image × 3 (forward + backward) × images × epochs."""
    import train_cnn  # the networks as the scripts define them
    import train_dense
    from mnistlab import baseline

    builders = {
        "baseline": baseline.build_classic_cnn,
        "cnn": train_cnn.build_model,
        "dense": train_dense.build_model,
        "cnn-best": train_cnn.build_best_model,
    }
    flops = forward_flops(builders[name]())
    return 3 * flops * record["train_images"] * record["epochs"] / record["training_seconds"] / 1e9


def forward_flops(model) -> float:
    """Multiply-adds ×2 of the Conv2D and Dense layers for one image."""
    total = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, height, width, out_channels = layer.output.shape
            kernel_h, kernel_w, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel_h * kernel_w * in_channels
        elif kind == "Dense":
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def cpu_peak_gflops() -> float:
    """Estimated fp32 peak: cores × clock × FLOPs per cycle (see FP32_FLOPS_PER_CYCLE)."""
    import os

    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = max(mhz, float(line.split(":")[1]))
    except OSError:
        pass
    return (os.cpu_count() or 1) * (mhz or 2000.0) / 1000 * FP32_FLOPS_PER_CYCLE


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    base_training = statistics.median(r["training_seconds"] for r in runs["baseline"])
    base_epoch = statistics.median(r["training_seconds"] / r["epochs"] for r in runs["baseline"])
    base_by_epochs = statistics.median(by_epoch_medians(r) for r in runs["baseline"])
    summary = {}
    for name, records in runs.items():
        reach = [first_reach(r, TARGETS[name]) for r in records]
        summary[name] = {
            "test_accuracy_median": statistics.median(r["test_accuracy"] for r in records),
            "test_accuracy_min": min(r["test_accuracy"] for r in records),
            "test_accuracy_max": max(r["test_accuracy"] for r in records),
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in records),
            "training_seconds_median": statistics.median(r["training_seconds"] for r in records),
            "wall_to_baseline_training": statistics.median(r["wall_seconds"] for r in records) / base_training,
            "training_to_baseline_epoch": statistics.median(r["training_seconds"] for r in records) / base_epoch,
            "training_to_baseline_training": statistics.median(r["training_seconds"] for r in records)
            / base_training,
            "by_epoch_medians_to_baseline": statistics.median(by_epoch_medians(r) for r in records) / base_by_epochs,
            "target": TARGETS[name],
            "seconds_to_target_median": statistics.median(x for x in reach if x is not None) if any(reach) else None,
            "runs_reaching_target": sum(x is not None for x in reach),
            "images_per_second_median": statistics.median(r["images_per_second"] for r in records),
            "latency_ms_median": statistics.median(r["latency_ms"] for r in records),
            "peak_memory_mib_max": max(r["peak_memory_mib"] for r in records),
            "training_gflops_median": statistics.median(training_gflops(name, r) for r in records),
            "parameters": records[0]["parameters"],
            "epochs": records[0]["epochs"],
            "precision": records[0]["precision"],
        }
    if "evaluate_images_per_second" in runs["baseline"][0]:
        summary["baseline"]["evaluate_images_per_second_median"] = statistics.median(
            r["evaluate_images_per_second"] for r in runs["baseline"]
        )
    return summary


def by_epoch_medians(record: dict[str, Any]) -> float:
    """A run's training time as its median epoch after the first (which traces the model) × its epochs: this CPU
    runs some epochs at half speed, and how many of those land in a run moves the sum more than the network does."""
    seconds = record["epoch_seconds"][1:] or record["epoch_seconds"]
    return statistics.median(seconds) * len(record["epoch_seconds"])


def markdown(summary: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    rows = [
        "| run | precision | test accuracy, median (min–max) | process wall-clock | training "
        "| wall-clock ÷ baseline's training | training ÷ baseline's training (by epoch medians) "
        "| training ÷ baseline's epoch | to first reach target "
        "| inference images/s | one image | peak memory "
        "| training GFLOP/s | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        reach = (
            f"{s['seconds_to_target_median']:.1f} s ({s['runs_reaching_target']}/{len(seeds)} runs ≥ {s['target']:.0%})"
            if s["seconds_to_target_median"] is not None
            else f"never ≥ {s['target']:.0%}"
        )
        rows.append(
            f"| {name} | {s['precision']} | {s['test_accuracy_median']:.2%} "
            f"({s['test_accuracy_min']:.2%}–{s['test_accuracy_max']:.2%}) "
            f"| {s['wall_seconds_median']:.1f} s | {s['training_seconds_median']:.1f} s "
            f"| {s['wall_to_baseline_training']:.2f} | {s['training_to_baseline_training']:.2f} "
            f"({s['by_epoch_medians_to_baseline']:.2f}) | {s['training_to_baseline_epoch']:.2f} | {reach} "
            f"| {s['images_per_second_median']:,.0f} "
            f"| {s['latency_ms_median']:.2f} ms | {s['peak_memory_mib_max']:,.0f} MiB "
            f"| {s['training_gflops_median']:.0f} | {s['parameters']:,} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    seeds = args.seeds[:1] if args.quick else args.seeds
    configs = configurations(args.quick, args.skip_best)
    if args.only:
        configs = {name: flags for name, flags in configs.items() if name == "baseline" or name in args.only}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for seed in seeds:
        for name, flags in configs.items():
            print(f"[seed {seed}] training {name} ...", flush=True)
            record = train_once(name, flags, seed, args.data, args.precision)
            runs[name].append(record)
            print(
                f"[seed {seed}] {name}: {record['test_accuracy']:.2%} in {record['wall_seconds']:.1f} s "
                f"(training {record['training_seconds']:.1f} s)",
                flush=True,
            )

    from mnistlab import plots, records

    summary = summarise(runs)
    table = markdown(summary, seeds)
    environment = records.environment()
    peak = cpu_peak_gflops()
    print()
    print(
        f"Machine: {environment['cpu']}; TensorFlow {environment['tensorflow']}, Keras {environment['keras']}; "
        f"estimated fp32 peak {peak:.0f} GFLOP/s"
    )
    print(table)
    base = summary["baseline"]
    if "evaluate_images_per_second_median" in base:
        print(
            f"\nbaseline model.evaluate() at its default batch: {base['evaluate_images_per_second_median']:,.0f} "
            "images/s (the inference reference)"
        )
    payload = {
        "quick": args.quick,
        "seeds": seeds,
        "environment": environment,
        "cpu_peak_gflops_estimate": peak,
        "summary": summary,
        "runs": runs,
        "markdown": table,
    }
    records.write_json(results_dir / "benchmark.json", payload)
    plots.save(plots.benchmark_figure(runs), results_dir / "benchmark.png")
    print(f"\nwrote {results_dir / 'benchmark.json'} and {results_dir / 'benchmark.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
