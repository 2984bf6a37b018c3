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
import functools
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.commands.common import JsonOption, QuietOption, RunBackend, VerboseOption, cli_errors, err, out, print_json, progress_bar
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


def _interrupt_exits_130(func: Any) -> Any:
    """Ctrl-C before the signal handlers are in place (loading models, opening the source) is
    a stop too: one line and exit 130, not a traceback; nothing was written yet."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("interrupted before the first frame: nothing was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


@cli_errors
@_interrupt_exits_130
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
    mqtt: Annotated[
        Optional[str],
        typer.Option("--mqtt", help="Publish each defective frame's record to mqtt://host[:port]/topic (QoS 1; heartbeat on topic/heartbeat)."),
    ] = None,
    mqtt_queue: Annotated[
        int, typer.Option("--mqtt-queue", min=1, help="MQTT messages kept unacknowledged while the broker is away; beyond, new ones are dropped (counted).")
    ] = 1000,
    show: Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop each camera after this many frames.")] = None,
    rate: Annotated[
        Optional[float],
        typer.Option("--rate", help="Feed a file or folder at this many frames/s like a live camera (frames the pipeline cannot take are dropped)."),
    ] = None,
    source_timeout: Annotated[
        float,
        typer.Option("--source-timeout", min=0.1, help="Live sources: seconds without a frame before reconnecting (3 tries); RTSP: also the connect and read limit."),
    ] = 5.0,
    threads: Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime / OpenVINO threads per model (0 = one per core; at most the cores).")] = 0,
    append: Annotated[bool, typer.Option("--append", help="Add this run's lines to an existing --jsonl instead of replacing it.")] = False,
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
    from edgeseg.edge.backends import BackendOptions, open_backend
    from edgeseg.edge.card import card_path
    from edgeseg.edge.annotate import Annotator
    from edgeseg.edge.defects import DefectSink
    from edgeseg.edge.mqtt import MqttSink, parse_mqtt_url
    from edgeseg.edge.pipeline import Pipeline
    from edgeseg.edge.records import header_record
    from edgeseg.edge.sinks import FileSink, JsonlSink, Sink, VideoSink, WindowSink
    from edgeseg.edge.sources import SourceOptions, open_source
    from edgeseg.edge.submission import SubmissionSink
    from edgeseg.files import check_output_paths

    started = (time.time(), time.perf_counter())
    uris = _source_uris(camera, source or [], sources_file)
    if len(uris) > 1 and (video is not None or show or submission is not None):
        raise typer.BadParameter(
            f"--video, --show and --submission take one source, not {len(uris)}; with several cameras use --jsonl (records name their camera)"
        )
    if append and jsonl is None:
        raise typer.BadParameter("--append adds to a --jsonl file: give --jsonl too")
    if url is not None and backend != "triton":
        raise typer.BadParameter("--url is for --backend triton")
    _check_usage(gate, threads)
    mqtt_target = parse_mqtt_url(mqtt) if mqtt is not None else None
    if backend == "triton":
        if classifier is not None or segmenter is not None:
            raise typer.BadParameter("with --backend triton the models come from the server: drop --classifier / --segmenter")
        from edgeseg.edge.backends.triton import TritonCascade, TritonPipeline

        cascade = TritonCascade(url or "grpc://127.0.0.1:8001")
        segmenter_card = cascade.segmenter_card
    else:
        options = BackendOptions.with_threads(threads)
        cls_backend = open_backend(classifier or _bundled(DEMO_CLASSIFIER, "--classifier"), backend, options)
        seg_backend = open_backend(segmenter or _bundled(DEMO_SEGMENTER, "--segmenter"), backend, options)
        segmenter_card = seg_backend.card
    source_options = SourceOptions(loop=loop, rate=rate, live=True if rate else None, timeout=source_timeout)

    received: List[int] = []
    files: Dict[str, FileSink] = {}  # output kind -> its sink
    with contextlib.ExitStack() as stack:
        pipeline_ref: List[Any] = []
        sinks: List[Sink] = []

        def header() -> Dict[str, Any]:
            return header_record(pipeline_ref[0].classifier, pipeline_ref[0].segmenter, ", ".join(str(uri) for uri in uris), pipeline_ref[0].gate, started)

        classes = segmenter_card.classes
        streams = [stack.enter_context(open_source(uri, source_options)) for uri in uris]
        models = [] if backend == "triton" else [b.artifact for b in (cls_backend, seg_backend)]
        check_output_paths(
            [*(path for stream in streams for path in stream.files), *models, *map(card_path, models)],
            {"--jsonl": jsonl, "--video": video, "--submission": submission, "--save-defects": save_defects},
        )
        annotator = Annotator(classes, min_area=segmenter_card.thresholds.get("min_area"))
        if jsonl is not None:
            files["jsonl"] = stack.enter_context(JsonlSink(jsonl, header=header, append=append))
        if submission is not None:
            if not streams[0].images or loop:
                raise UsageError("--submission needs an image folder or glob as --source, read once (no --loop)")
            files["submission"] = stack.enter_context(SubmissionSink(submission, classes))
        if video is not None:
            files["video"] = stack.enter_context(VideoSink(video, classes, fps=streams[0].fps, annotator=annotator, codec=codec))
        sinks.extend(files.values())
        defects = stack.enter_context(DefectSink(save_defects, header=header)) if save_defects is not None else None
        if defects is not None:
            sinks.append(defects)
        mqtt_sink = None
        if mqtt_target is not None:
            mqtt_sink = stack.enter_context(MqttSink(mqtt_target, queue_limit=mqtt_queue, sources=streams, header=header))
            sinks.append(mqtt_sink)
        if show:
            sinks.append(stack.enter_context(WindowSink(classes, on_quit=lambda: pipeline_ref[0].stop("window closed"), annotator=annotator)))
        progress = stack.enter_context(progress_bar(json_output or not err.is_terminal, transient=True))
        task = progress.add_task("frames", total=max_frames * len(streams) if max_frames else None)
        settings: Any = dict(gate=gate, max_frames=max_frames, max_batch=max_batch, batch_timeout=batch_timeout / 1000.0)
        settings["on_result"] = lambda _result: progress.advance(task)
        if backend == "triton":
            stack.callback(cascade.close)
            pipeline = TritonPipeline(streams, cascade, sinks, **settings)
        else:
            pipeline = Pipeline(streams, cls_backend, seg_backend, sinks, **settings)
        pipeline_ref.append(pipeline)
        with _stop_on_signals(pipeline.stop, received):
            report = pipeline.run()
    # what is on disk now, not what was asked for
    report["outputs"] = {kind: str(sink.written) for kind, sink in files.items() if sink.written is not None}
    report["output_frames"] = {kind: sink.kept for kind, sink in files.items() if sink.written is not None}
    if defects is not None and defects.frames:
        report["outputs"]["defects"] = str(defects.folder)
        report["output_frames"]["defects"] = defects.frames
    if mqtt_sink is not None:
        report["mqtt"] = mqtt_sink.stats()
    failures = [sink.problem for sink in files.values() if sink.problem]
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
        for kind, path in report["outputs"].items():
            out.print(f"{kind}: {path} ({report['output_frames'][kind]} frames)")
        if mqtt_sink is not None:
            m = report["mqtt"]
            out.print(f"mqtt: {m['url']} ({m['published']} defect records, {m['acknowledged']} acknowledged, {m['dropped']} dropped)")
    if mqtt_sink is not None and report["mqtt"]["dropped"] + report["mqtt"]["unsent"]:
        m = report["mqtt"]
        err.print(f"warning: {m['dropped']} MQTT record(s) dropped beyond --mqtt-queue {m['queue_limit']}, {m['unsent']} unsent at exit")
    for failure in failures:
        err.print(f"[bold red]error:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)
    if signal.SIGINT in received:
        raise typer.Exit(EXIT_INTERRUPTED)
