"""`edgeseg serve`: the cascade on a Triton Inference Server, for `edgeseg run --backend triton`.

A thin shell over edgeseg.serve: write the model repository (onnx_to_triton_repository /
engines_to_triton_repository), then start tritonserver on it until SIGINT (exit 130) or SIGTERM
(exit 0). With --write-only it writes the repository for a stock Triton elsewhere and exits;
--prepare is the one-time setup step that builds the server's Python environment (serving never
installs anything).
"""
from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgeseg import assets
from edgeseg.commands.common import QuietOption, VerboseOption, cli_errors, exit_after_signals, note, out, stop_on_signals
from edgeseg.errors import EdgesegError


@cli_errors
def serve(
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="Classifier .onnx or .engine (card beside it). Default: bundled demo.")] = None,
    segmenter: Annotated[Optional[Path], typer.Option("--segmenter", help="ResUNet .onnx or .engine (card beside it). Default: bundled demo.")] = None,
    repository: Annotated[
        Optional[Path], typer.Option("--repository", help="Write the Triton model repository here (a new folder; default: a temporary one).")
    ] = None,
    write_only: Annotated[bool, typer.Option("--write-only", help="Write the repository (for a stock Triton server) and exit.")] = False,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Build the server's Python environment once (pytriton's server: a venv with numpy<2, OpenCV) and exit.")
    ] = False,
    stand_in: Annotated[
        Optional[bool],
        typer.Option(
            "--stand-in/--no-stand-in",
            help="Serve the ONNX models with Python-backend stand-ins on edgeseg's ONNX Runtime backend (default: when the server has no onnxruntime backend).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 serves other machines).")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option("--grpc-port", min=1, max=65535, help="gRPC port (what --url names).")] = 8001,
    http_port: Annotated[int, typer.Option("--http-port", min=1, max=65535, help="HTTP port (health, statistics).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Batch limit of the cascade and of ONNX models with a dynamic batch.")] = 8,
    queue_delay_us: Annotated[int, typer.Option("--queue-delay-us", min=0, help="How long Triton may hold a request to fill a batch.")] = 2000,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Instances of each model (per GPU on a stock server).")] = 1,
    instance_kind: Annotated[str, typer.Option("--instance-kind", help="Where a stock server runs the two models: gpu or cpu.")] = "gpu",
    tritonserver: Annotated[
        Optional[Path], typer.Option("--tritonserver", help="tritonserver binary (default: on PATH, else nvidia-pytriton's).")
    ] = None,
    server_python: Annotated[
        Optional[Path], typer.Option("--server-python", help="System python3.11 the pytriton stub links (default /usr/bin/python3.11).")
    ] = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Serve the cascade (classifier -> gate -> ResUNet -> post-processing) from Triton Inference Server.

    Examples:\n
      edgeseg serve --prepare            # once: the server's Python environment\n
      edgeseg serve                      # demo models on 127.0.0.1:8001\n
      edgeseg run --backend triton --url grpc://127.0.0.1:8001\n
      edgeseg serve --classifier cls.fp16.engine --segmenter seg.fp16.engine --repository repo --write-only
    """
    from edgeseg.edge.backends import artifact_backend
    from edgeseg.serve import server as triton
    from edgeseg.serve.repository import RepositoryOptions, engines_to_triton_repository, onnx_to_triton_repository

    if write_only and repository is None:
        raise typer.BadParameter("--write-only needs --repository")
    if prepare:
        prepared = triton.prepare_server_environment(triton.find_tritonserver(tritonserver), server_python or triton.SYSTEM_PYTHON)
        out.print(f"Triton server environment: {prepared or 'the stock install needs none'}")
        return
    cls_path = classifier or assets.classifier_onnx()
    seg_path = segmenter or assets.segmenter_onnx()
    engines = artifact_backend(cls_path) == "tensorrt"
    install = None if write_only else triton.find_tritonserver(tritonserver)
    if stand_in is None:
        stand_in = install is not None and not engines and not install.has_onnxruntime
    if install is not None and not stand_in and not (install.has_tensorrt if engines else install.has_onnxruntime):
        needed = "tensorrt" if engines else "onnxruntime"
        raise EdgesegError(f"{install.binary} has no {needed} backend ({install.backends})", hint="use a stock Triton install" + ("" if engines else ", or --stand-in"))
    env = triton.server_environment(install, server_python or triton.SYSTEM_PYTHON) if install is not None else {}  # refuses before writing
    options = RepositoryOptions(max_batch=max_batch, queue_delay_us=queue_delay_us, instances=instances, kind=instance_kind, stand_in=stand_in)
    temporary = repository is None
    target = Path(tempfile.mkdtemp(prefix="edgeseg-triton-")) / "models" if repository is None else repository
    write = engines_to_triton_repository if engines else onnx_to_triton_repository
    try:
        write(cls_path, seg_path, target, options)
        if install is None:  # --write-only
            out.print(f"Triton model repository: {target} (classifier, segmenter, cascade)")
            return
        how = "Python-backend stand-ins on ONNX Runtime" if stand_in else ("tensorrt_plan" if engines else "onnxruntime_onnx")
        note(f"classifier and segmenter served as {how}" + (" (this server has no onnxruntime backend)" if stand_in and not install.has_onnxruntime else ""))
        # The log goes beside the repository, or beside the temporary folder (it outlives it, to be read after a failure).
        log = target.parent.parent / f"edgeseg-serve-{grpc_port}.log" if temporary else None
        server = triton.TritonServer(target, install, env, host=host, grpc_port=grpc_port, http_port=http_port, log=log)
        received: List[int] = []
        with stop_on_signals(lambda _reason: None, received, "stopping Triton"):
            server.start()
            note(f"serving {target} on {server.grpc_url} (HTTP {host}:{http_port}); Ctrl-C stops · log: {server.log}")
            out.print(f"edgeseg run --backend triton --url {server.grpc_url}")
            try:
                while not received and server.process is not None and server.process.poll() is None:
                    time.sleep(0.2)
            finally:
                code = server.process.poll() if server.process is not None else None
                server.stop()
        if code is not None:
            raise EdgesegError(f"tritonserver exited with code {code}: {server.last_log()}", hint=f"full log: {server.log}")
        note(f"{signal.Signals(received[0]).name}: Triton stopped")
        exit_after_signals(received)
    finally:
        if temporary:
            shutil.rmtree(target.parent, ignore_errors=True)

