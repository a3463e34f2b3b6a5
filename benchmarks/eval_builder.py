"""Score the committed builder sets (textless/assets/benchmarks/{seen,unseen}) with the starter pipeline's unit LM and
with the same LM with shuffled weights (the chance-level control).

    python -m benchmarks.eval_builder                        # both sets, writes benchmarks/results/eval_builder.json
    python -m benchmarks.eval_builder --sets seen --units-cache /tmp/units.npz

Models: the tokenizer and LM of `textless.pipeline.starter_pipeline()` (offline Whisper-base layer 4 + k-means 100,
deduplicated units; an OPT unit LM trained on the units of the bundled corpus' training split) and
`textless.eval.builder.scoring.shuffled_lm(lm, seed)`: the same LM with each parameter tensor's entries randomly
permuted (one torch.Generator seeded with --shuffle-seed, tensors in named_parameters() order). Every wav is tokenized
once; both LMs score the same units with `textless eval`'s default scoring (mean log-prob per token over bos + units +
eos; ties count 0.5; ZeroSpeech voice averaging). Prints one table (accuracy per set / suite / LM and the breakdowns
by frequency band, length and type) and writes the JSON (accuracies, counts and std per set / suite / subset).
`--units-cache` stores the units per wav (keyed by path and content hash) to skip the ~1 s/file tokenization on
reruns.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SETS = REPO / "textless" / "assets" / "benchmarks"


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def load_cache(path: Path | None) -> dict[Path, np.ndarray]:
    """{wav: units} from a cache written by `save_cache`, keeping only entries whose file content is unchanged."""
    if path is None or not path.is_file():
        return {}
    stored = np.load(path, allow_pickle=False)
    units = {}
    for key in stored.files:
        name, digest = key.rsplit("|", 1)
        wav = Path(name)
        if wav.is_file() and _digest(wav) == digest:
            units[wav] = stored[key]
    return units


def save_cache(path: Path | None, units: dict[Path, np.ndarray]) -> None:
    if path is not None:
        np.savez(path, **{f"{wav}|{_digest(wav)}": ids for wav, ids in units.items()})


def rows(results: dict) -> list[tuple]:
    """(set, suite, by, group, accuracy % per LM..., n) rows: headline metrics first, then breakdowns."""
    out = []
    for set_name, suites in results.items():
        for suite_name, by_lm in suites.items():
            lms = list(by_lm)
            first = by_lm[lms[0]]
            for metric in first["metrics"]:
                accs = [by_lm[lm]["metrics"][metric]["accuracy"] for lm in lms]
                if all(a is not None for a in accs):
                    out.append((set_name, suite_name, "metric", metric,
                                *(100 * a for a in accs), first["metrics"][metric]["n"]))
            for kind, groups in first["breakdowns"].items():
                for group in groups:
                    accs = [by_lm[lm]["breakdowns"][kind][group]["accuracy"] for lm in lms]
                    if all(a is not None for a in accs):
                        out.append((set_name, suite_name, kind, group, *(100 * a for a in accs),
                                    first["breakdowns"][kind][group]["n"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["seen", "unseen"], help="set names under --root")
    parser.add_argument("--root", type=Path, default=SETS)
    parser.add_argument("--shuffle-seed", type=int, default=0)
    parser.add_argument("--units-cache", type=Path, help="npz file caching the units of every wav")
    parser.add_argument("--output", type=Path, default=RESULTS / "eval_builder.json")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.tokenize_kernels import write_results
    from textless.eval.builder.scoring import headline, score_sets, shuffled_lm
    from textless.pipeline import starter_pipeline
    from textless.utils.table import format_table

    torch.manual_seed(0)
    start = time.perf_counter()
    pipe = starter_pipeline("cpu", load_vocoder=False)
    lm = pipe.lm.eval()
    lms = {"starter": lm, "shuffled": shuffled_lm(lm, args.shuffle_seed)}
    units = load_cache(args.units_cache)
    cached = len(units)
    roots = {name: args.root / name for name in args.sets}
    results = score_sets(roots, pipe.tokenizer, lms, units=units)
    save_cache(args.units_cache, units)
    table = format_table(["set", "suite", "by", "group", *(f"{n} %" for n in lms), "n"], rows(results))
    print(table)
    comparison = {}
    for set_name, suites in results.items():
        for suite_name, by_lm in suites.items():
            metric, starter, n = headline(by_lm["starter"])
            shuffled = headline(by_lm["shuffled"])[1]
            comparison[f"{set_name}/{suite_name}"] = {
                "metric": metric, "n": n, "starter": starter, "shuffled": shuffled,
                "starter_minus_shuffled_points": round(100 * (starter - shuffled), 2),
                # half-width of a 95 % normal interval around chance (0.5) for n items scored 0 / 1
                "chance_interval_points": round(100 * 1.96 * 0.5 / n ** 0.5, 1)}
    print("\n" + format_table(["set/suite", "metric", "starter %", "shuffled %", "difference", "chance +-", "n"],
                              [(k, v["metric"], 100 * v["starter"], 100 * v["shuffled"],
                                v["starter_minus_shuffled_points"], v["chance_interval_points"], v["n"])
                               for k, v in comparison.items()]))
    report = {"format": "textless.benchmarks.eval_builder", "version": 1,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "lms": {"starter": "textless/assets/starter (tokenizer + lm)",
                      "shuffled": f"starter LM, every parameter tensor's entries permuted (seed {args.shuffle_seed})"},
              "scoring": "mean log-prob per token over bos + units + eos (textless eval defaults); ties 0.5",
              "tokenizer": pipe.tokenizer.identity(), "num_parameters": lm.num_parameters(),
              "seconds": round(time.perf_counter() - start, 1), "units_from_cache": cached,
              "sets": {name: str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
                       for name, path in roots.items()},
              "comparison": comparison, "results": results}
    write_results(args.output, report, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
