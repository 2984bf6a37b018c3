"""`edgeseg bench`: latency, throughput, efficiency and accuracy per model × backend × precision.

A thin shell over edgeseg.bench: plan the matrix (variants), measure it (suite), render it
(report) and write <out>/<name>.json, .md and .png; or compare two result files (compare).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg import assets
from edgeseg.commands.common import (
    BENCH_DIR,
    EXIT_INTERRUPTED,
    JsonOption,
    OutDirOption,
    PRECISIONS,
    QuietOption,
    SeedOption,
    ThreadsOption,
    VerboseOption,
    cli_errors,
    err,
    metavar,
    note,
    number,
    one_of,
    out,
    print_json,
    progress_bar,
)
from edgeseg.edge.backends import MODEL_BACKENDS
from edgeseg.errors import EdgesegError

# The runtime's one-model backends (edgeseg.edge.backends.MODEL_BACKENDS) plus the PyTorch eager baseline.
BENCH_BACKENDS = tuple(b for b in MODEL_BACKENDS if b != "auto") + ("pytorch",)


@cli_errors
def bench(
    models: Annotated[
        Optional[List[Path]],
        typer.Argument(
            help="FP32 ONNX models (each expands to every backend x precision found for it), or engines / FP16 / QDQ "
            "ONNX benchmarked as given. Default: the bundled demo classifier and segmenter."
        ),
    ] = None,
    backend: Annotated[
        Optional[List[str]],
        typer.Option("--backend", "-b", metavar=metavar(BENCH_BACKENDS), callback=one_of(BENCH_BACKENDS), help="Repeat for several (default: all)."),
    ] = None,
    precision: Annotated[
        Optional[List[str]],
        typer.Option("--precision", "-p", metavar=metavar(PRECISIONS), callback=one_of(PRECISIONS), help="Repeat for several (default: all)."),
    ] = None,
    batch: Annotated[Optional[List[int]], typer.Option("--batch", min=1, help="Images per inference (repeat for several; default 1).")] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="Seconds of warm-up runs before timing each cell.")] = 1.0,
    duration: Annotated[float, typer.Option("--duration", help="Time each cell for at least this many seconds ...")] = 3.0,
    iterations: Annotated[int, typer.Option("--iterations", help="... and at least this many runs (trtexec's rule).")] = 10,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Split the timing into this many rounds, cells interleaved: ratios stay fair on a busy machine.")
    ] = 1,
    engines: Annotated[
        Optional[Path], typer.Option("--engines", help="Folder of built engines / ORT artifacts (default: beside each ONNX, then ./engines).")
    ] = None,
    validation: Annotated[
        Optional[Path], typer.Option("--validation", help="Severstal-layout folder (train.csv + train_images/): adds Dice / recall columns.")
    ] = None,
    validation_count: Annotated[Optional[int], typer.Option("--validation-count", min=1, help="Use this many strips of it (seeded choice).")] = None,
    frames: Annotated[
        int, typer.Option("--max-frames", "--frames", min=0, help="Strips in the end-to-end pipeline clip (0 skips the pipeline run).")
    ] = 30,
    prevalence: Annotated[float, typer.Option("--prevalence", help="Share of defective strips in that clip (the gate's pass rate).")] = 0.3,
    threads: ThreadsOption = 0,
    baseline: Annotated[str, typer.Option("--baseline", help="The 'backend precision' cell the 'x base' column divides by.")] = "onnxruntime fp32",
    out_dir: OutDirOption = BENCH_DIR,
    name: Annotated[str, typer.Option("--name", help="File name of the results: <out>/<name>.json, .md, .png.")] = "bench",
    compare: Annotated[
        Optional[Tuple[Path, Path]], typer.Option("--compare", help="Compare two result files A B instead of measuring (exit 1: a regression; 2: an unusable file).")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="With --compare: the change for the worse that counts (0.05 = 5 %), if also beyond the noise.")
    ] = 0.05,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Benchmark the classifier and ResUNet the way trtexec does, for every backend and precision.

    Each cell: --warmup seconds of warm-up, then timed runs until both --iterations and --duration are met.\n
    Reported: host latency, compute (CUDA events on TensorRT), H2D and D2H copies, each as mean, median, p90, p95, p99, min and max; throughput; coefficient of variation (above 0.1: flagged unstable).\n
    Efficiency: achieved GFLOP/s against the machine's measured GEMM rate. Accuracy columns with --validation. End to end: the cascade over a clip at --prevalence.\n
    Cells that cannot run here (no TensorRT, no engine built) are listed with the command that fills them. Results: <out>/<name>.json (versioned schema, environment block), .md and .png.

    Examples:\n
      edgeseg bench                                  # bundled demo models, every backend here\n
      edgeseg bench models/classifier.onnx models/segmenter.onnx -b tensorrt -p fp16 -p int8 --batch 1 --batch 4\n
      edgeseg bench --validation data/test --max-frames 60 --prevalence 0.1\n
      edgeseg bench --compare bench/main.json bench/bench.json --threshold 0.05
    """
    if compare is not None:
        if models:
            raise typer.BadParameter("--compare reads two result files; give no models with it")
        _compare(compare, threshold, json_output)
        return
    from edgeseg.bench.measure import Settings
    from edgeseg.bench.report import write_files
    from edgeseg.bench.suite import Options, run_bench
    from edgeseg.bench.torch_backend import default_device
    from edgeseg.bench.variants import plan

    backends = backend or list(BENCH_BACKENDS)
    options = Options(
        settings=Settings(warmup_s=warmup, duration_s=duration, iterations=iterations),
        batches=batch or [1],
        threads=threads,
        torch_device=default_device() if "pytorch" in backends else "cpu",
        validation=validation,
        validation_count=validation_count,
        pipeline_frames=frames,
        prevalence=prevalence,
        seed=seed,
        baseline=baseline,
        repeats=repeats,
    )
    options.check()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as scratch:
        cells = plan(models or assets.models(), backends, precision or list(PRECISIONS), engines, Path(scratch), options.torch_device)
        runnable = [c for c in cells if c.artifact is not None]
        if not runnable:
            reasons = "; ".join(sorted({c.skipped for c in cells}))
            raise EdgesegError(f"nothing to benchmark here: {reasons}")
        steps = len(runnable) * len(options.batches) * repeats + (len({c.label for c in runnable}) if frames else 0)
        with _Steps(steps, quiet=json_output) as step:
            document = run_bench(cells, options, step)
    files = write_files(document, out_dir, name)
    if json_output:
        print_json(document)
    else:
        _print(document, files)
    if document["interrupted"]:
        err.print("interrupted: the files hold what was measured before the stop")
        raise typer.Exit(EXIT_INTERRUPTED)


class _Steps:
    """A progress bar over the matrix on stderr; called with each step's description as it starts."""

    def __init__(self, total: int, quiet: bool) -> None:
        self._progress = progress_bar(quiet, transient=True)
        self._task = self._progress.add_task("bench", total=total)
        self._started = 0

    def __call__(self, description: str) -> None:
        self._progress.update(self._task, completed=self._started, description=description)
        self._started += 1

    def __enter__(self) -> "_Steps":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()


def _print(document: Dict[str, Any], files: Dict[str, Path]) -> None:
    from edgeseg.bench.report import gemm_note, rich_tables, skipped, summary_line, unstable

    for table in rich_tables(document):
        out.print(table)
    out.print(summary_line(document), highlight=False)
    for line in skipped(document):
        note(f"[dim]not run: {escape(line)}[/]")
    for line in unstable(document):
        err.print(f"[yellow]warning:[/] unstable timing (coefficient of variation > 0.1), close other programs and rerun: {escape(line)}", highlight=False)
    for key, value in (document.get("notes") or {}).items():
        note(f"[dim]{escape(key)}: {escape(str(value))}[/]")
    if gemm_note(document):
        note(f"[dim]{escape(str(gemm_note(document)))}[/]")
    out.print("results: " + ", ".join(str(p) for p in files.values()), highlight=False)


def _compare(paths: Tuple[Path, Path], threshold: float, json_output: bool) -> None:
    """Exit 1 on a regression beyond the threshold and the runs' noise, 2 on an unusable file."""
    from edgeseg.bench.compare import compare, load, machines

    old, new = load(paths[0]), load(paths[1])
    result = compare(old, new, threshold)
    where = machines(old, new)
    if json_output:
        print_json({"a": str(paths[0]), "b": str(paths[1]), "threshold": threshold, "machines": where, **result.to_dict()})
    else:
        out.print(compare_table(result, paths, threshold))
        for cell in result.missing_in_b:
            note(f"[yellow]missing in B:[/] {escape(cell)} (measured in A only: not compared)")
        for cell in result.new_in_b:
            note(f"[dim]new in B: {escape(cell)}[/]")
    if where[0] != where[1]:
        err.print(f"[yellow]warning:[/] different machines ({escape(where[0])} vs {escape(where[1])}): the ratios compare the machines too", highlight=False)
    if result.regressions:
        err.print(f"[bold red]{len(result.regressions)} regression(s)[/] beyond {threshold:.0%} and the noise", highlight=False)
        raise typer.Exit(1)


def compare_table(result: Any, paths: Tuple[Path, Path], threshold: float) -> Any:
    """`--compare`'s verdict per cell and metric, for people (folded under cell and metric where narrow)."""
    from rich.table import Table

    from edgeseg.edge.tables import Fit

    title = f"{paths[1]} vs {paths[0]}: a regression is worse by more than {threshold:.0%} and more than the runs' noise"
    table = Table(title=title, title_justify="left")
    for column in ("cell", "metric", "A", "B", "change", "noise", ""):
        table.add_column(column, justify="left" if column in ("cell", "metric", "") else "right")
    marks = {"regression": "[bold red]REGRESSION[/]", "improvement": "[green]better[/]", "within noise": "[dim]within noise[/]", "unchanged": "",
             "too few samples": "[dim]too few samples[/]"}
    for c in result.changes:
        change = "n/a" if c.ratio is None else f"{c.ratio - 1:+.1%}".replace("-0.0%", "+0.0%")
        table.add_row(c.cell, c.metric, number(c.old, 3), number(c.new, 3), change, f"{c.noise:.1%}", marks[c.verdict])
    return Fit(table, keys=2)
