"""`edgeseg run`: stream a camera, video, folder or RTSP feed through classifier -> gate -> ResUNet.

A thin shell over the library: check the arguments, open the models (edgeseg.inspector.Inspector,
cards checked), the sources and the sinks (outputs checked against the sources and each other;
nothing is written before the first frame), stream (`Inspector.stream`), print the latency report
and what was written.
SIGINT and SIGTERM stop it cleanly: queued frames finish, the JSONL is complete, the video is
finalised; a second signal skips the queued frames.

Exit codes: 0 done; 1 a failure (source error, an output not fully written, no frame
processed); 2 a usage error; 130 stopped by SIGINT (as the shell reports Ctrl-C). SIGTERM is a
service manager's ordinary stop and exits 0 when everything was written.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg import assets
from edgeseg.commands import line_options as line
from edgeseg.commands.common import (
    Codec, JsonOption, QuietOption, RunBackend, VerboseOption, cli_errors, err, exit_after_signals, interrupt_exits_130, out, print_json, progress_bar,
    stop_on_signals,
)
from edgeseg.errors import EdgesegError, UsageError

DEMO_CLASSIFIER, DEMO_SEGMENTER, DEMO_CLIP = assets.CLASSIFIER, assets.SEGMENTER, assets.CLIP


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_usage(gate: Optional[float], threads: int) -> None:
    """Refuse option values that cannot work before anything is opened (exit 2)."""
    from edgeseg.edge.cascade import check_gate

    if gate is not None:
        try:
            check_gate(gate)
        except EdgesegError as exc:
            raise UsageError(f"--{exc.message}") from None
    cores = usable_cores()
    if threads > cores:
        raise UsageError(f"--threads {threads} is more than the {cores} cores this process may use", hint=f"pass 1-{cores}, or 0 for one per core")


def _source_uris(camera: Optional[int], sources: List[str], sources_file: Optional[Path]) -> List[Any]:
    """The cameras of a run, in order: --camera, or every --source then the --sources file's
    lines; the bundled demo clip when none is given."""
    uris: List[Any] = list(sources)
    if sources_file is not None:
        try:
            lines = sources_file.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read the sources file {sources_file}: {exc.strerror if isinstance(exc, OSError) else exc}")
        listed = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not listed:
            raise typer.BadParameter(f"the sources file {sources_file} lists no source (one URI per line)")
        uris += listed
    if camera is not None:
        if uris:
            raise typer.BadParameter("give --camera or --source / --sources, not both")
        return [camera]
    return uris or [str(assets.existing(DEMO_CLIP, "--source"))]


def _model_files(backend: str, classifier: Optional[Path], segmenter: Optional[Path]) -> Tuple[Optional[Path], Optional[Path]]:
    """The run's classifier and segmenter files: none with --backend triton (the server holds
    them), else the given ones or the bundled demo models."""
    if backend == "triton":
        if classifier is not None or segmenter is not None:
            raise typer.BadParameter("with --backend triton the models come from the server: drop --classifier / --segmenter")
        return None, None
    return classifier or assets.existing(DEMO_CLASSIFIER, "--classifier"), segmenter or assets.existing(DEMO_SEGMENTER, "--segmenter")


@cli_errors
@interrupt_exits_130
def run(
    camera: Annotated[Optional[int], typer.Option("--camera", help="Camera index (V4L2 /dev/videoN on Linux).")] = None,
    source: Annotated[
        Optional[List[str]],
        typer.Option(
            "--source",
            "-s",
            help="Video file, image folder, glob ('strips/*.png'), /dev/videoN, csi://N, rtsp://... or a GStreamer "
            "pipeline; repeat it for several cameras, batched together. Default: the bundled demo clip.",
        ),
    ] = None,
    sources_file: Annotated[
        Optional[Path], typer.Option("--sources", help="A text file of sources, one per line (# comments), added to --source.")
    ] = None,
    max_batch: Annotated[
        Optional[int],
        typer.Option("--max-batch", min=1, help="Most frames per inference batch across cameras (default: one per camera; capped by the engine's profile)."),
    ] = None,
    batch_timeout: Annotated[
        float, typer.Option("--batch-timeout", min=0.0, help="Milliseconds a batch waits for the cameras that have not given it a frame yet.")
    ] = 20.0,
    classifier: Annotated[
        Optional[Path], typer.Option("--classifier", help="Classifier .onnx or .engine (card beside it). Default: bundled demo.")
    ] = None,
    segmenter: Annotated[
        Optional[Path], typer.Option("--segmenter", help="ResUNet .onnx or .engine (card beside it). Default: bundled demo.")
    ] = None,
    backend: Annotated[
        RunBackend,
        typer.Option(
            "--backend",
            "-b",
            help="auto: by file (.engine -> tensorrt, .xml -> openvino, .onnx -> onnxruntime with CUDA, else openvino where "
            "installed, else onnxruntime: edgeseg.edge.registry.auto_backend); triton: the cascade on the Triton server at --url (models come from the server).",
        ),
    ] = "auto",
    url: Annotated[
        Optional[str], typer.Option("--url", help="Triton server for --backend triton (default grpc://127.0.0.1:8001; `edgeseg serve` starts one).")
    ] = None,
    gate: Annotated[
        Optional[float],
        typer.Option("--gate", help="Defect probability from which the ResUNet runs (default: the classifier card's; 0 = always)."),
    ] = None,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON line per frame here (flushed per line).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Write the annotated video here (.mp4, .avi, .mkv or .webm).")] = None,
    codec: Annotated[
        Codec, typer.Option("--codec", help="Video codec: auto = the container's (mp4v, MJPG, VP8); h264 plays in browsers where this OpenCV has it.")
    ] = "auto",
    save_defects: Annotated[
        Optional[Path],
        typer.Option("--save-defects", help="Save each gated frame (PNG), a crop per defect and DIR/index.jsonl here, for review."),
    ] = None,
    submission: Annotated[
        Optional[Path],
        typer.Option("--submission", help="Write a Kaggle Severstal submission CSV (ImageId_ClassId,EncodedPixels); image folder or glob sources."),
    ] = None,
    mqtt: Annotated[
        Optional[str],
        typer.Option("--mqtt", help="Publish each defective frame's record to mqtt://host[:port]/topic (QoS 1; heartbeat on topic/heartbeat)."),
    ] = None,
    mqtt_queue: Annotated[
        int, typer.Option("--mqtt-queue", min=1, help="MQTT messages kept unacknowledged while the broker is away; beyond, new ones are dropped (counted).")
    ] = 1000,
    show: Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")] = False,
    metrics: Annotated[
        Optional[str],
        typer.Option("--metrics", help="Serve Prometheus /metrics, /healthz and /readyz at [HOST:]PORT (loopback unless HOST is given, e.g. 0.0.0.0:9108)."),
    ] = None,
    view: line.ViewOption = None,
    view_token: line.ViewTokenOption = None,
    opcua: line.OpcuaOption = None,
    opcua_node: line.OpcuaNodeOption = None,
    opcua_queue: line.OpcuaQueueOption = 1000,
    save_uncertain: line.SaveUncertainOption = None,
    uncertain_band: line.UncertainBandOption = 0.1,
    uncertain_pixels: line.UncertainPixelsOption = 0.25,
    uncertain_rate: line.UncertainRateOption = 6.0,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop each camera after this many frames.")] = None,
    rate: Annotated[
        Optional[float],
        typer.Option("--rate", help="Feed a file or folder at this many frames/s like a live camera (frames the pipeline cannot take are dropped)."),
    ] = None,
    source_timeout: Annotated[
        float,
        typer.Option("--source-timeout", min=0.1, help="Live sources: seconds without a frame before reconnecting; RTSP: also the connect and read limit."),
    ] = 5.0,
    reconnect: Annotated[
        Optional[int],
        typer.Option("--reconnect", min=0, help="Live sources: end with an error after this many failed reconnects in a row (default: keep trying, with back-off up to 5 s)."),
    ] = None,
    require_all: Annotated[
        bool, typer.Option("--require-all", help="Several cameras: stop when one does not open at the start (default: run the others, keep trying it).")
    ] = False,
    threads: Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime / OpenVINO threads per model (0 = one per core; at most the cores).")] = 0,
    append: Annotated[bool, typer.Option("--append", help="Add this run's lines to an existing --jsonl instead of replacing it.")] = False,
    models_from: Annotated[
        Optional[Path],
        typer.Option("--models-from", help="Watch this folder for a new model pair (named as --classifier / --segmenter, cards beside): verified, then swapped in between two frames without stopping; SIGHUP reloads."),
    ] = None,
    shadow: Annotated[int, typer.Option("--shadow", min=0, help="Run a new model pair beside the running one on this many live frames first and report their agreement.")] = 0,
    skip_verify: Annotated[
        bool, typer.Option("--skip-verify", help="Do not check the models on their golden sets first (`edgeseg verify`); the header record says so.")
    ] = False,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run the inspection cascade on a stream and report per-stage latency.

    With no arguments it runs the bundled demo models over the bundled synthetic clip.

    Examples:\n
      edgeseg run\n
      edgeseg run --camera 0 --show\n
      edgeseg run --source line.mp4 --jsonl out.jsonl --video out.mp4\n
      edgeseg run --source rtsp://top/stream --source rtsp://bottom/stream --jsonl line.jsonl\n
      edgeseg run --source rtsp://cam/stream --classifier models/classifier.fp16.engine --segmenter models/segmenter.fp16.engine
    """
    from edgeseg.commands.updates import model_updates
    from edgeseg.edge.outputs import OutputOptions, open_outputs
    from edgeseg.edge.sources import SourceOptions, open_source
    from edgeseg.files import model_files
    from edgeseg.edge.uri import redact_uri
    from edgeseg.inspector import Inspector

    started = (time.time(), time.perf_counter())
    uris = _source_uris(camera, source or [], sources_file)
    if len(uris) > 1 and (video is not None or show or submission is not None):
        raise typer.BadParameter(
            f"--video, --show and --submission take one source, not {len(uris)}; with several cameras use --jsonl (records name their camera)"
        )
    if url is not None and backend != "triton":
        raise typer.BadParameter("--url is for --backend triton")
    _check_usage(gate, threads)
    wanted = OutputOptions(
        jsonl=jsonl, append=append, video=video, codec=codec, submission=submission, save_defects=save_defects, mqtt=mqtt, mqtt_queue=mqtt_queue, show=show,
        metrics=metrics,
        view=view, view_token=view_token, opcua=opcua, opcua_node=opcua_node, opcua_queue=opcua_queue,
        save_uncertain=save_uncertain, uncertain_band=uncertain_band, uncertain_pixels=uncertain_pixels, uncertain_rate=uncertain_rate,
    )
    demo = not (classifier or segmenter or source or sources_file or camera is not None or backend == "triton")
    classifier, segmenter = _model_files(backend, classifier, segmenter)
    inspector = Inspector(classifier, segmenter, backend=backend, url=url, gate=gate, threads=threads, verify=not skip_verify)
    models = [path for path in (classifier, segmenter) if path is not None]
    source_options = SourceOptions(loop=loop, rate=rate, live=True if rate else None, timeout=source_timeout, reconnects=reconnect)

    received: List[int] = []
    with contextlib.ExitStack() as stack:
        required = require_all or len(uris) == 1
        streams = [stack.enter_context(open_source(uri, source_options, required=required)) for uri in uris]
        reads = [*([sources_file] if sources_file is not None else []), *(path for model in models for path in model_files(model))]
        outputs = stack.enter_context(
            open_outputs(
                wanted, streams, inspector.cascade.segmenter_card, reads, on_quit=lambda: inspector.stop("window closed"),
                models_ready=lambda: inspector.ready,
            )
        )
        progress = stack.enter_context(progress_bar(json_output or not err.is_terminal, transient=True))
        stack.enter_context(model_updates(inspector, classifier, segmenter, models_from, shadow))
        task = progress.add_task("frames", total=max_frames * len(streams) if max_frames else None)
        with stop_on_signals(inspector.stop, received, "finishing the queued frames (again to skip them)", "skipping the queued frames"):
            report = inspector.stream(
                streams, [outputs], max_frames=max_frames, max_batch=max_batch, batch_timeout=batch_timeout / 1000.0,
                on_result=lambda _result: progress.advance(task), source_name=", ".join(redact_uri(str(uri)) for uri in uris), started=started,
            )
    report.update(outputs.report())  # what is on disk now, not what was asked for
    failures = outputs.failures()
    if report["source"]["error"]:
        failures.insert(0, report["source"]["error"])
    if not report["frames"] and not received:
        failures.append(f"no frame was processed ({report['stopped_by']}; {report['source']['corrupt']} unreadable frame(s) skipped), so nothing was written")
    if json_output:
        print_json(dict(report, errors=failures))
    else:
        from edgeseg.edge.latency import camera_table, latency_table

        title = f"edgeseg run · {report['source']['uri']} · {report['backends'].get('segmenter', '')}"
        out.print(latency_table(report, title=title))
        if len(report["cameras"]) > 1:
            out.print(camera_table(report))
        for line in outputs.lines():
            out.print(escape(line))
        if demo:  # the demo ran: README's flow starts here
            out.print("next: edgeseg data synth --count 400", highlight=False)
    for warning in outputs.warnings():
        err.print(f"warning: {escape(warning)}", highlight=False)
    for kind, path in report["outputs"].items():
        if os.path.islink(path):  # written through: say where the bytes went
            err.print(f"note: {kind} {escape(path)} is a symbolic link: the file written is {escape(os.path.realpath(path))}", highlight=False, soft_wrap=True)
    for status in report["cameras"]:
        if status["source"]["down"]:
            err.print(f"warning: camera {status['camera']} ({escape(status['source']['uri'])}) is down: {status['frames']} frame(s), still reconnecting at the end", highlight=False, soft_wrap=True)
    for failure in failures:
        err.print(f"[bold red]error:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)
    exit_after_signals(received)
