"""Compare likelihood-suite reports (`textless eval` JSON) in one grouped bar chart.

    python -m benchmarks.plot_eval outputs/eval/gslm.json outputs/eval/twist.json -o outputs/eval/compare.png
    python -m benchmarks.plot_eval a.json b.json --labels scratch twist --breakdowns

One group of bars per headline metric (``suite: metric``; with ``--breakdowns`` also every breakdown group, e.g.
``swuggy frequency=oov``), one bar per report, accuracy in percent with the 50 % chance line. A metric missing from
a report is left empty.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textless.jobs.evaluate import read_report


def metric_table(reports: Sequence[dict], breakdowns: bool = False) -> tuple[list[str], np.ndarray]:
    """(metric names, accuracies in percent [len(reports), len(names)], NaN where a report lacks the metric)."""
    values: list[dict[str, float]] = []
    for report in reports:
        row = {}
        for suite, entry in report["suites"].items():
            for metric, score in entry["metrics"].items():
                row[f"{suite}: {metric}"] = score["accuracy"]
            if breakdowns:
                for kind, groups in entry["breakdowns"].items():
                    for group, score in groups.items():
                        row[f"{suite} {kind}={group}"] = score["accuracy"]
        values.append(row)
    names = list(dict.fromkeys(name for row in values for name in row))
    table = np.array([[np.nan if row.get(n) is None else 100.0 * row[n] for n in names] for row in values])
    return names, table.reshape(len(reports), len(names))


def plot_reports(paths: Sequence[str | Path], output: str | Path, labels: Sequence[str] | None = None,
                 breakdowns: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [read_report(p) for p in paths]
    labels = list(labels) if labels else [Path(p).stem for p in paths]
    if len(labels) != len(reports):
        raise SystemExit(f"{len(labels)} labels for {len(reports)} reports")
    names, table = metric_table(reports, breakdowns)
    width = 0.8 / len(reports)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 0.45 * len(names) * len(reports) + 2)), 5.0))
    for i, label in enumerate(labels):
        bars = ax.bar(x + (i - (len(reports) - 1) / 2) * width, table[i], width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.axhline(50, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="JSON reports written by `textless eval`")
    parser.add_argument("-o", "--output", default="outputs/eval/compare.png")
    parser.add_argument("--labels", nargs="+", help="one legend label per report (default: file stems)")
    parser.add_argument("--breakdowns", action="store_true", help="also plot the breakdown groups")
    args = parser.parse_args(argv)
    print(f"wrote {plot_reports(args.reports, args.output, args.labels, args.breakdowns)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
