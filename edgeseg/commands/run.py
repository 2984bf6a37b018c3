"""`edgeseg run`: stream a camera, video, folder or RTSP feed through classifier -> gate -> ResUNet.

A thin shell over edgeseg.edge: open the backends (cards checked), the sinks (paths checked
before the first frame) and the source, run the Pipeline, print the latency report. SIGINT and
SIGTERM stop it cleanly: queued frames finish, the JSONL is complete, the video is finalised.
"""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any, Iterator, List, Literal, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.commands.common import JsonOption, cli_errors, err, out, print_json, progress_bar
from edgeseg.edge.videocodec import CODEC_CHOICES
from edgeseg.errors import EdgesegError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_CLASSIFIER = ASSETS / "classifier.onnx"
DEMO_SEGMENTER = ASSETS / "segmenter.onnx"
DEMO_CLIP = ASSETS / "demo_clip.mp4"


def _bundled(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise EdgesegError(f"the bundled demo file {path} is missing", hint=f"pass {flag} yourself, or reinstall edgeseg")
    return path


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:
    """SIGINT / SIGTERM call `stop` (finish the queued frames, then end) instead of killing the
    run; a second signal skips the queued frames."""
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        err.print(f"{signal.Signals(signum).name}: finishing the queued frames (again to skip them)")
        stop(f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    return uris or [str(_bundled(DEMO_CLIP, "--source"))]


@cli_errors
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
        str, typer.Option("--backend", help="auto (by file: .engine -> tensorrt, .onnx -> onnxruntime), onnxruntime or tensorrt.")
    ] = "auto",
    gate: Annotated[
        Optional[float],
        typer.Option("--gate", help="Defect probability from which the ResUNet runs (default: the classifier card's; 0 = always)."),
    ] = None,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON line per frame here (flushed per line).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Write the annotated video here (.mp4, .avi, .mkv or .webm).")] = None,
    codec: Annotated[
        Literal[CODEC_CHOICES], typer.Option("--codec", help="Video codec: auto = the container's (mp4v, MJPG, VP8); h264 plays in browsers where this OpenCV has it.")
    ] = "auto",
    show: Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop each camera after this many frames.")] = None,
    rate: Annotated[
        Optional[float],
        typer.Option("--rate", help="Feed a file or folder at this many frames/s like a live camera (frames the pipeline cannot take are dropped)."),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime threads per model (0 = one per core).")] = 0,
    json_output: JsonOption = False,
) -> None:
    """Run the inspection cascade on a stream and report per-stage latency.

    With no arguments it runs the bundled demo models over the bundled synthetic clip.

    Examples:\n
      edgeseg run\n
      edgeseg run --camera 0 --show\n
      edgeseg run --source line.mp4 --jsonl out.jsonl --video out.mp4\n
      edgeseg run --source rtsp://top/stream --source rtsp://bottom/stream --jsonl line.jsonl\n
      edgeseg run --source rtsp://cam/stream --classifier cls.fp16.engine --segmenter seg.fp16.engine
    """
    from edgeseg.edge.backends import BACKENDS, open_backend
    from edgeseg.edge.annotate import Annotator
    from edgeseg.edge.pipeline import Pipeline
    from edgeseg.edge.sinks import JsonlSink, Sink, VideoSink, WindowSink
    from edgeseg.edge.sources import SourceOptions, open_source

    uris = _source_uris(camera, source or [], sources_file)
    if len(uris) > 1 and (video is not None or show):
        raise typer.BadParameter(f"--video and --show take one source, not {len(uris)}; with several cameras use --jsonl (records name their camera)")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}")
    ort_options = {"intra_op_threads": threads}
    cls_backend = open_backend(classifier or _bundled(DEMO_CLASSIFIER, "--classifier"), backend, ort_options)
    seg_backend = open_backend(segmenter or _bundled(DEMO_SEGMENTER, "--segmenter"), backend, ort_options)
    source_options = SourceOptions(loop=loop, rate=rate, live=True if rate else None)

    with contextlib.ExitStack() as stack:
        pipeline_ref: List[Any] = []
        sinks: List[Sink] = []
        if jsonl is not None:
            sinks.append(stack.enter_context(JsonlSink(jsonl)))
        classes = seg_backend.card.classes
        streams = [stack.enter_context(open_source(uri, source_options)) for uri in uris]
        annotator = Annotator(classes, min_area=seg_backend.card.thresholds.get("min_area"))
        if video is not None:
            sinks.append(stack.enter_context(VideoSink(video, classes, fps=streams[0].fps, annotator=annotator, codec=codec)))
        if show:
            sinks.append(stack.enter_context(WindowSink(classes, on_quit=lambda: pipeline_ref[0].stop("window closed"), annotator=annotator)))
        progress = stack.enter_context(progress_bar(json_output or not err.is_terminal, transient=True))
        task = progress.add_task("frames", total=max_frames * len(streams) if max_frames else None)
        pipeline = Pipeline(
            streams,
            cls_backend,
            seg_backend,
            sinks,
            gate=gate,
            max_frames=max_frames,
            max_batch=max_batch,
            batch_timeout=batch_timeout / 1000.0,
            on_result=lambda _result: progress.advance(task),
        )
        pipeline_ref.append(pipeline)
        annotator.gate = pipeline.gate  # the threshold the pipeline applies, shown on every frame
        with _stop_on_signals(pipeline.stop):
            report = pipeline.run()
    report["outputs"] = {k: str(v) for k, v in (("jsonl", jsonl), ("video", video)) if v is not None}
    if json_output:
        print_json(report)
    else:
        from edgeseg.edge.latency import camera_table, latency_table

        title = f"edgeseg run · {report['source']['uri']} · {report['backends'].get('segmenter', '')}"
        out.print(latency_table(report, title=title))
        if len(report["cameras"]) > 1:
            out.print(camera_table(report))
        for kind, path in report["outputs"].items():
            out.print(f"{kind}: {path}")
    if report["source"]["error"]:
        err.print(f"[bold red]error:[/] {escape(report['source']['error'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
