"""Docs/s of the scale-out prediction paths, one process against several, in one run:
`hanclf predict --devices N` and Ray Data `map_batches(Predictor, compute=ActorPoolStrategy(size=N))`.

    python bench/scaleout.py --model runs/yelp --data ../shared/data/yelp_reviews.parquet \
        --rows 20000 --processes 1 2 [--output bench/results/scaleout-cpu.md]

The input is the first --rows texts of --data, written to a temporary Parquet file in row groups
of --row-group rows (Ray reads row groups in parallel; predict's workers take slices of rows
whatever the row groups). Each figure is the median of
--repeats runs, timed from the call to the last row written (process start-up included: it is
part of what a user waits for). Run nothing else meanwhile: on a shared CPU the figures mean
little. Ray is measured only when it is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hanclf.predict import Predictor, predict_file


def write_input(data: Path, rows: int, row_group: int, path: Path) -> None:
    texts = pq.read_table(data, columns=["text"]).column("text").slice(0, rows)
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts})
    pq.write_table(table, path, row_group_size=row_group)


def time_predict(model: Path, source: Path, out: Path, processes: int) -> float:
    start = time.perf_counter()
    predict_file(model, source, out, id_column="id", device="cpu", devices=processes, force=True)
    return time.perf_counter() - start


def time_ray(model: Path, source: Path, out: Path, processes: int) -> float:
    import ray

    ray.init(num_cpus=processes + 1, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        ray.data.read_parquet(str(source)).map_batches(
            Predictor, fn_constructor_kwargs={"model_dir": str(model), "device": "cpu"},
            batch_format="pyarrow", batch_size=2048, compute=ray.data.ActorPoolStrategy(size=processes),
        ).write_parquet(str(out))
        return time.perf_counter() - start
    finally:
        ray.shutdown()


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, Python "
            f"{platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--row-group", type=int, default=2_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    try:
        import ray  # noqa: F401
        paths = {"hanclf predict --devices N": time_predict, "Ray map_batches, N actors": time_ray}
    except ImportError:
        print("ray not installed: measuring hanclf predict only", file=sys.stderr)
        paths = {"hanclf predict --devices N": time_predict}

    lines = ["# Scale-out prediction on CPU", "", f"- {machine()}",
             f"- model {args.model}, {args.rows} rows of {args.data.name} in row groups of "
             f"{args.row_group}; median of {args.repeats} runs, start-up included", "",
             "| path | N | seconds | docs/s | vs N=1 |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="hanclf-scaleout-") as tmp:
        source = Path(tmp) / "input.parquet"
        write_input(args.data, args.rows, args.row_group, source)
        for name, run in paths.items():
            base = None
            for n in args.processes:
                runs = [run(args.model, source, Path(tmp) / f"{run.__name__}-{n}-{r}.parquet", n)
                        for r in range(args.repeats)]
                seconds = statistics.median(runs)
                base = base or seconds
                lines.append(f"| {name} | {n} | {seconds:.1f} | {args.rows / seconds:,.0f} | "
                             f"{base / seconds:.2f}× |")
                print(lines[-1], file=sys.stderr, flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
