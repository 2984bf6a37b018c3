"""`edgeseg verify ARTIFACT...`: does each artifact reproduce its golden set on this machine?

A thin shell over edgeseg.edge.verify.verify_artifact. Exit codes: 0 every artifact reproduced
its golden set (or has none: a warning); 1 one did not (one line each: the artifact, the frame,
the difference and the fix).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.commands.common import Backend, JsonOption, QuietOption, VerboseOption, cli_errors, err, out, print_json


@cli_errors
def verify(
    artifacts: Annotated[List[Path], typer.Argument(help="Models to check: .onnx, OpenVINO .xml or TensorRT .engine, card and golden set beside each.")],
    backend: Annotated[
        Backend, typer.Option("--backend", "-b", help="Runtime to check on (auto: the one `edgeseg run` picks here for each artifact).")
    ] = "auto",
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run each artifact on its golden frames on the backend that will run it and compare with the outputs its card recorded.

    A different CPU class, TensorRT or OpenVINO version, a DLA fallback or a corrupted or swapped file shows here, before the first frame
    (`edgeseg run` does this check itself unless --skip-verify).

    Examples:\n
      edgeseg verify models/classifier.int8.xml models/segmenter.int8.xml\n
      edgeseg verify models/*.engine --json
    """
    from edgeseg.edge.verify import FAILED, NO_GOLDEN, verify_artifact

    results = [verify_artifact(path, backend) for path in artifacts]
    if json_output:
        print_json({"ok": all(r.ok for r in results), "results": [r.to_dict() for r in results]})
    else:
        for result in results:
            if result.status == FAILED:
                hint = f" — {result.hint}" if result.hint else ""
                err.print(f"[bold red]error:[/] {escape(result.message + hint)}", highlight=False, soft_wrap=True)
            elif result.status == NO_GOLDEN:
                hint = f" ({result.hint})" if result.hint else ""
                err.print(f"[yellow]warning: {escape(result.message + hint)}[/]", highlight=False, soft_wrap=True)
            else:
                out.print(f"ok: {escape(result.message)} in {result.seconds:.2f} s", highlight=False, soft_wrap=True)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
