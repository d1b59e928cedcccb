"""One self-contained HTML page with every result: results/report.html.

The comparison table, every figure the other scripts have made (embedded, so the page can be mailed or
opened anywhere), and one or two sentences under each, written from the measured numbers. Figures not made
yet are listed with the command that makes them.

    python report.py            # after any of compare.py, visualize.py, experiments.py, benchmark.py
"""

from __future__ import annotations

import base64
import html
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnistlab import cli

Caption = Callable[[dict[str, Any]], str]


def pct(value: float) -> str:
    return f"{value:.2%}"


def conclusion(numbers: dict[str, Any]) -> str:
    return " ".join(numbers.get("conclusion", []))


def comparison_caption(numbers: dict[str, Any]) -> str:
    cnn, dense = numbers["models"]["cnn"], numbers["models"]["dense"]
    return (
        f"The CNN reaches {pct(cnn['test_accuracy'])} ({cnn['test_errors']} errors) with {cnn['parameters']:,} "
        f"parameters; the dense network {pct(dense['test_accuracy'])} ({dense['test_errors']} errors) with "
        f"{dense['parameters']:,}. Training took {cnn['training_seconds']:.1f} s and "
        f"{dense['training_seconds']:.1f} s."
    )


def visualize_caption(key: str) -> Caption:
    def caption(numbers: dict[str, Any]) -> str:
        errors, worst = numbers["errors"], numbers["most_common_confusion"]
        texts = {
            "kernels": "Each small square is one learned {}×{} kernel of the first conv layer: bright weights add, "
            "dark ones subtract — edge and stroke detectors, learned from data.".format(*numbers["first_kernel_size"]),
            "feature_maps": "One test digit after every layer: "
            + " → ".join("×".join(map(str, s)) for s in numbers["feature_map_shapes"].values())
            + ". Early maps still look like the digit; deeper ones are smaller and more abstract.",
            "confusion": f"Rows are true digits, columns predictions. The CNN makes {errors['cnn']} errors, the dense "
            f"network {errors['dense']}; their most common mix-ups are {worst['cnn']['true']}→"
            f"{worst['cnn']['predicted']} and {worst['dense']['true']}→{worst['dense']['predicted']}.",
            "misclassified": "Digits each model gets wrong, with its confidence: many are ambiguous even to people.",
        }
        return texts[key]

    return caption


def benchmark_caption(numbers: dict[str, Any]) -> str:
    s = numbers["summary"]
    text = (
        f"Median test accuracy: baseline {pct(s['baseline']['test_accuracy_median'])} in "
        f"{s['baseline']['training_seconds_median']:.0f} s of training; this project's CNN "
        f"{pct(s['cnn']['test_accuracy_median'])} in {s['cnn']['wall_seconds_median']:.0f} s for the whole process."
    )
    if "cnn-best" in s:
        text += f" The best preset: {pct(s['cnn-best']['test_accuracy_median'])}."
    return text


# (figure file, title, JSON file with its numbers, caption writer, command that makes it)
SECTIONS: list[tuple[str, str, str, Caption, str]] = [
    ("comparison.png", "CNN vs. dense network", "comparison.json", comparison_caption, "python compare.py"),
    ("kernels.png", "First-layer kernels", "visualize.json", visualize_caption("kernels"), "python visualize.py"),
    (
        "feature_maps.png",
        "Feature maps, layer by layer",
        "visualize.json",
        visualize_caption("feature_maps"),
        "python visualize.py",
    ),
    ("confusion.png", "Confusion matrices", "visualize.json", visualize_caption("confusion"), "python visualize.py"),
    (
        "misclassified.png",
        "Misclassified digits",
        "visualize.json",
        visualize_caption("misclassified"),
        "python visualize.py",
    ),
    *[
        (f"exp_{name}.png", f"Experiment: {name}", f"exp_{name}.json", conclusion, f"python experiments.py {name}")
        for name in ("spatial", "sharing", "stride", "activations", "dropout", "augmentation")
    ],
    (
        "benchmark.png",
        "Benchmark: accuracy against training time",
        "benchmark.json",
        benchmark_caption,
        "python benchmark.py",
    ),
]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
figure { margin: 2em 0; } img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; } .missing { color: #a00; }
"""


def comparison_table(numbers: dict[str, Any]) -> str:
    rows = [
        ("test accuracy", lambda r: pct(r["test_accuracy"])),
        ("errors", lambda r: f"{r['test_errors']:,}"),
        ("parameters", lambda r: f"{r['parameters']:,}"),
        ("model file", lambda r: f"{r['model_file_kib']:,.0f} KiB"),
        ("training time", lambda r: f"{r['training_seconds']:.1f} s"),
        ("time per epoch", lambda r: f"{r['seconds_per_epoch']:.2f} s"),
        ("inference", lambda r: f"{r['images_per_second']:,.0f} images/s"),
        ("one image", lambda r: f"{r['latency_ms']:.2f} ms"),
    ]
    models = numbers["models"]
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(name.upper())}</th>" for name in models) + "</tr>"
    body = "".join(
        "<tr><td>" + label + "</td>" + "".join(f"<td>{fmt(row)}</td>" for row in models.values()) + "</tr>"
        for label, fmt in rows
    )
    return f"<table>{head}{body}</table>"


def build_page(results_dir: Path) -> tuple[str, list[str], list[str]]:
    """The HTML, the figures included, and the commands for those missing."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>CNN vs. dense network on MNIST</title>",
        f"<style>{STYLE}</style></head><body><h1>CNN vs. dense network on MNIST</h1>",
    ]
    comparison = results_dir / "comparison.json"
    if comparison.is_file():
        parts.append(comparison_table(json.loads(comparison.read_text())))
    included, missing = [], []
    for figure, title, numbers_file, caption, command in SECTIONS:
        path = results_dir / figure
        if not path.is_file():
            missing.append(f"{figure}: run <code>{html.escape(command)}</code>")
            continue
        text = ""
        numbers_path = results_dir / numbers_file
        if numbers_path.is_file():
            try:
                text = caption(json.loads(numbers_path.read_text()))
            except (KeyError, ValueError, TypeError):
                text = f"(the numbers in {numbers_file} are from an older version; run {command} again)"
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(text)}</figcaption></figure>"
        )
        included.append(figure)
    if missing:
        parts.append("<h2>Not made yet</h2><ul class='missing'>" + "".join(f"<li>{m}</li>" for m in missing) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts), included, missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    cli.add_results_flag(parser, "where the figures are, and the report goes")
    args = parser.parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    from mnistlab import records

    page, included, missing = build_page(results_dir)
    with records.atomic_path(results_dir / "report.html") as temp:
        temp.write_text(page, encoding="utf-8")
    print(
        f"{len(included)} figures in {results_dir / 'report.html'}; {len(missing)} not made yet"
        + (" (listed in the page with the command that makes each)" if missing else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
