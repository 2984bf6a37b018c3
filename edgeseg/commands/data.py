"""`edgeseg data synth|check`: make a synthetic data set, or check a Severstal-layout folder."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import (
    DATA_DIR,
    Command,
    DataOption,
    Group,
    JsonOption,
    OutDirOption,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    out,
    print_json,
    progress_bar,
)

app = typer.Typer(
    help="Data in the Severstal layout (DIR/train.csv + DIR/train_images/*.jpg, 1600x256 strips).",
    cls=Group,
    no_args_is_help=True,
)


@app.command("synth", cls=Command)
@cli_errors
def synth(
    out_dir: OutDirOption = DATA_DIR,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of strips to render.")] = 200,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Render synthetic steel strips with pits (1), cracks (2), scratches (3) and patches (4).

    About half the strips are clean; the same --seed gives the same strips. Use a different seed
    for a held-out set, e.g. `edgeseg data synth --count 800 --seed 1` (into data/train) and
    `edgeseg data synth --out data/test --count 200 --seed 2`.
    """
    from edgeseg.data.synth import write_synthetic

    with progress_bar(json_output) as progress:
        task = progress.add_task("rendering strips", total=count)
        summary = write_synthetic(out_dir, count, seed, progress=lambda n: progress.advance(task, n))
    if json_output:
        print_json(summary.to_dict())
        return
    out.print(synth_table(summary, count, out_dir))
    data = "" if out_dir == DATA_DIR else f" --data {shlex.quote(str(out_dir))}"
    out.print(f"next: edgeseg train classifier --base-width 8 --input-size 64x400{data}", highlight=False, soft_wrap=True)


def synth_table(summary: Any, count: int, out_dir: Path) -> Any:
    """Clean strips and strips per defect class, for people (Fit)."""
    from edgeseg.data.synth import SHAPES
    from edgeseg.edge.tables import Fit

    table = Table(title=f"{count} synthetic strips in {out_dir}")
    table.add_column("clean")
    for cls, name in sorted(SHAPES.items()):
        table.add_column(f"{cls}: {name}")
    table.add_row(str(summary.clean), *(str(summary.class_counts[c]) for c in sorted(summary.class_counts)))
    return Fit(table)


@app.command("check", cls=Command)
@cli_errors
def check(
    data: DataOption = DATA_DIR, json_output: JsonOption = False, verbose: VerboseOption = False, quiet: QuietOption = False
) -> None:
    """Read every row and image of a data folder and list what training would skip (exit 1 if any)."""
    from edgeseg.data.severstal import load_images, scan

    dataset = scan(data)
    with progress_bar(json_output) as progress:
        task = progress.add_task("reading images", total=len(dataset.samples))
        readable = sum(1 for _ in load_images(dataset, lambda n: progress.advance(task, n)))
    defective = sum(1 for s in dataset.samples if s.has_defect)
    report = {"data": str(data), "images": len(dataset.samples), "readable": readable, "with_defects": defective,
              "left_out": dataset.left_out, "problems": dataset.problems}
    if json_output:
        print_json(report)
    else:
        out.print(f"{data}: {readable}/{len(dataset.samples)} images readable, {defective} with defects, "
                  f"{len(dataset.left_out)} left out for malformed rows")
        for problem in dataset.problems:
            out.print(f"[yellow]problem:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
    if dataset.problems:
        raise typer.Exit(1)
