"""`edgeseg run`: stream a camera, video, folder or RTSP feed through classifier -> gate -> ResUNet.

A thin shell over edgeseg.edge: open the backends (cards checked), the sinks (paths checked
before the first frame) and the source, run the Pipeline, print the latency report. SIGINT and
SIGTERM stop it cleanly: queued frames finish, the JSONL is complete, the video is finalised.
"""
from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional

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


@cli_errors
def run(
    camera: Annotated[Optional[int], typer.Option("--camera", help="Camera index (V4L2 /dev/videoN on Linux).")] = None,
    source: Annotated[
        Optional[str],
        typer.Option(
            "--source",
            "-s",
            help="Video file, image folder, glob ('strips/*.png'), /dev/videoN, csi://N, rtsp://... or a GStreamer "
            "pipeline. Default: the bundled demo clip.",
        ),
    ] = None,
    classifier: Annotated[
        Optional[Path], typer.Option("--classifier", help="Classifier .onnx or .engine (card beside it). Default: bundled demo.")
    ] = None,
    segmenter: Annotated[
        Optional[Path], typer.Option("--segmenter", help="ResUNet .onnx or .engine (card beside it). Default: bundled demo.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto (by file: .engine -> tensorrt, .onnx -> onnxruntime), onnxruntime, tensorrt, or triton (the cascade on the "
            "Triton server at --url; models come from the server).",
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
        Literal[CODEC_CHOICES], typer.Option("--codec", help="Video codec: auto = the container's (mp4v, MJPG, VP8); h264 plays in browsers where this OpenCV has it.")
    ] = "auto",
    save_defects: Annotated[
        Optional[Path],
        typer.Option("--save-defects", help="Save each gated frame (PNG), a crop per defect and DIR/index.jsonl here, for review."),
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
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
      edgeseg run --source rtsp://cam/stream --classifier cls.fp16.engine --segmenter seg.fp16.engine
    """
    from edgeseg.edge.backends import BACKENDS, open_backend
    from edgeseg.edge.annotate import Annotator
    from edgeseg.edge.defects import DefectSink
    from edgeseg.edge.pipeline import Pipeline
    from edgeseg.edge.records import header_record
    from edgeseg.edge.sinks import JsonlSink, Sink, VideoSink, WindowSink
    from edgeseg.edge.sources import SourceOptions, open_source

    started = (time.time(), time.perf_counter())
    if camera is not None and source is not None:
        raise typer.BadParameter("give --camera or --source, not both")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}")
    if url is not None and backend != "triton":
        raise typer.BadParameter("--url is for --backend triton")
    if backend == "triton":
        if classifier is not None or segmenter is not None:
            raise typer.BadParameter("with --backend triton the models come from the server: drop --classifier / --segmenter")
        from edgeseg.edge.backends.triton import TritonCascade, TritonPipeline

        cascade = TritonCascade(url or "grpc://127.0.0.1:8001")
        segmenter_card = cascade.segmenter_card
    else:
        ort_options = {"intra_op_threads": threads}
        cls_backend = open_backend(classifier or _bundled(DEMO_CLASSIFIER, "--classifier"), backend, ort_options)
        seg_backend = open_backend(segmenter or _bundled(DEMO_SEGMENTER, "--segmenter"), backend, ort_options)
        segmenter_card = seg_backend.card
    classes = segmenter_card.classes
    uri: Any = camera if camera is not None else (source or str(_bundled(DEMO_CLIP, "--source")))
    source_options = SourceOptions(loop=loop, rate=rate, live=True if rate else None)

    with contextlib.ExitStack() as stack:
        pipeline_ref: List[Any] = []
        sinks: List[Sink] = []

        def header() -> Dict[str, Any]:
            return header_record(pipeline_ref[0].classifier, pipeline_ref[0].segmenter, str(uri), pipeline_ref[0].gate, started)

        if jsonl is not None:
            sinks.append(stack.enter_context(JsonlSink(jsonl, header=header)))
        if save_defects is not None:
            sinks.append(stack.enter_context(DefectSink(save_defects, header=header)))
        stream = stack.enter_context(open_source(uri, source_options))
        annotator = Annotator(classes, min_area=segmenter_card.thresholds.get("min_area"))
        if video is not None:
            sinks.append(stack.enter_context(VideoSink(video, classes, fps=stream.fps, annotator=annotator, codec=codec)))
        if show:
            sinks.append(stack.enter_context(WindowSink(classes, on_quit=lambda: pipeline_ref[0].stop("window closed"), annotator=annotator)))
        progress = stack.enter_context(progress_bar(json_output or not err.is_terminal, transient=True))
        task = progress.add_task("frames", total=max_frames)
        options: Any = dict(gate=gate, max_frames=max_frames, on_result=lambda _result: progress.advance(task))
        if backend == "triton":
            stack.callback(cascade.close)
            pipeline = TritonPipeline(stream, cascade, sinks, **options)
        else:
            pipeline = Pipeline(stream, cls_backend, seg_backend, sinks, **options)
        pipeline_ref.append(pipeline)
        annotator.gate = pipeline.gate  # the threshold the pipeline applies, shown on every frame
        with _stop_on_signals(pipeline.stop):
            report = pipeline.run()
    report["outputs"] = {k: str(v) for k, v in (("jsonl", jsonl), ("video", video), ("defects", save_defects)) if v is not None}
    if json_output:
        print_json(report)
    else:
        from edgeseg.edge.latency import latency_table

        title = f"edgeseg run · {report['source']['uri']} · {report['backends'].get('segmenter', '')}"
        out.print(latency_table(report, title=title))
        for kind, path in report["outputs"].items():
            out.print(f"{kind}: {path}")
    if report["source"]["error"]:
        err.print(f"[bold red]error:[/] {escape(report['source']['error'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
