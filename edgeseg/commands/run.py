"""`edgeseg run`: stream a camera, video, folder or RTSP feed through classifier -> gate -> ResUNet.

A thin shell over edgeseg.edge: check the arguments, open the backends (cards checked), the
source and the sinks (outputs checked against the source and each other; nothing is written
before the first frame), run the Pipeline, print the latency report and what was written.
SIGINT and SIGTERM stop it cleanly: queued frames finish, the JSONL is complete, the video is
finalised; a second signal skips the queued frames.

Exit codes: 0 done; 1 a failure (source error, an output not fully written, no frame
processed); 2 a usage error; 130 stopped by SIGINT (as the shell reports Ctrl-C). SIGTERM is a
service manager's ordinary stop and exits 0 when everything was written.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.commands.common import JsonOption, cli_errors, err, out, print_json, progress_bar
from edgeseg.edge.videocodec import CODEC_CHOICES
from edgeseg.errors import EdgesegError, UsageError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_CLASSIFIER = ASSETS / "classifier.onnx"
DEMO_SEGMENTER = ASSETS / "segmenter.onnx"
DEMO_CLIP = ASSETS / "demo_clip.mp4"
EXIT_INTERRUPTED = 130


def _bundled(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise EdgesegError(f"the bundled demo file {path} is missing", hint=f"pass {flag} yourself, or reinstall edgeseg")
    return path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_usage(gate: Optional[float], threads: int) -> None:
    """Refuse option values that cannot work before anything is opened (exit 2)."""
    from edgeseg.edge.pipeline import check_gate

    if gate is not None:
        try:
            check_gate(gate)
        except EdgesegError as exc:
            raise UsageError(f"--{exc.message}") from None
    cores = usable_cores()
    if threads > cores:
        raise UsageError(f"--threads {threads} is more than the {cores} cores this process may use", hint=f"pass 1-{cores}, or 0 for one per core")


@contextlib.contextmanager
def _stop_on_signals(stop: Any, received: List[int]) -> Iterator[None]:
    """SIGINT / SIGTERM call `stop` (finish the queued frames, then end) instead of killing the
    run; a second signal skips the queued frames. Signals are appended to `received`."""
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        received.append(signum)
        if len(received) == 1:
            err.print(f"{name}: finishing the queued frames (again to skip them)")
        else:
            err.print(f"{name}: skipping the queued frames")
        stop(f"stopped by {name}")

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
    submission: Annotated[
        Optional[Path],
        typer.Option("--submission", help="Write a Kaggle Severstal submission CSV (ImageId_ClassId,EncodedPixels); image folder or glob sources."),
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
    rate: Annotated[
        Optional[float],
        typer.Option("--rate", help="Feed a file or folder at this many frames/s like a live camera (frames the pipeline cannot take are dropped)."),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime threads per model (0 = one per core; at most the cores).")] = 0,
    append: Annotated[bool, typer.Option("--append", help="Add this run's lines to an existing --jsonl instead of replacing it.")] = False,
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
    from edgeseg.edge.sinks import FileSink, JsonlSink, Sink, VideoSink, WindowSink
    from edgeseg.edge.sources import SourceOptions, open_source
    from edgeseg.edge.submission import SubmissionSink
    from edgeseg.files import check_output_paths

    started = (time.time(), time.perf_counter())
    if camera is not None and source is not None:
        raise typer.BadParameter("give --camera or --source, not both")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}")
    if append and jsonl is None:
        raise typer.BadParameter("--append adds to a --jsonl file: give --jsonl too")
    if url is not None and backend != "triton":
        raise typer.BadParameter("--url is for --backend triton")
    _check_usage(gate, threads)
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

    received: List[int] = []
    files: Dict[str, FileSink] = {}  # output kind -> its sink
    with contextlib.ExitStack() as stack:
        pipeline_ref: List[Any] = []
        sinks: List[Sink] = []

        def header() -> Dict[str, Any]:
            return header_record(pipeline_ref[0].classifier, pipeline_ref[0].segmenter, str(uri), pipeline_ref[0].gate, started)

        stream = stack.enter_context(open_source(uri, source_options))
        check_output_paths(
            stream.files, {"--jsonl": jsonl, "--video": video, "--submission": submission, "--save-defects": save_defects}
        )
        annotator = Annotator(classes, min_area=segmenter_card.thresholds.get("min_area"))
        if jsonl is not None:
            files["jsonl"] = stack.enter_context(JsonlSink(jsonl, header=header, append=append))
        if submission is not None:
            if not stream.images or loop:
                raise UsageError("--submission needs an image folder or glob as --source, read once (no --loop)")
            files["submission"] = stack.enter_context(SubmissionSink(submission, classes))
        if video is not None:
            files["video"] = stack.enter_context(VideoSink(video, classes, fps=stream.fps, annotator=annotator, codec=codec))
        sinks.extend(files.values())
        defects = stack.enter_context(DefectSink(save_defects, header=header)) if save_defects is not None else None
        if defects is not None:
            sinks.append(defects)
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
        with _stop_on_signals(pipeline.stop, received):
            report = pipeline.run()
    # what is on disk now, not what was asked for
    report["outputs"] = {kind: str(sink.written) for kind, sink in files.items() if sink.written is not None}
    report["output_frames"] = {kind: sink.kept for kind, sink in files.items() if sink.written is not None}
    if defects is not None and defects.frames:
        report["outputs"]["defects"] = str(defects.folder)
        report["output_frames"]["defects"] = defects.frames
    failures = [sink.problem for sink in files.values() if sink.problem]
    if report["source"]["error"]:
        failures.insert(0, report["source"]["error"])
    if not report["frames"] and not received:
        failures.append(f"no frame was processed ({report['stopped_by']}; {report['source']['corrupt']} unreadable frame(s) skipped), so nothing was written")
    if json_output:
        print_json(dict(report, errors=failures))
    else:
        from edgeseg.edge.latency import latency_table

        title = f"edgeseg run · {report['source']['uri']} · {report['backends'].get('segmenter', '')}"
        out.print(latency_table(report, title=title))
        for kind, path in report["outputs"].items():
            out.print(f"{kind}: {path} ({report['output_frames'][kind]} frames)")
    for failure in failures:
        err.print(f"[bold red]error:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)
    if signal.SIGINT in received:
        raise typer.Exit(EXIT_INTERRUPTED)
