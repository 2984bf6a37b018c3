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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import typer
from rich.markup import escape

from edgeseg import assets
from edgeseg.commands import run_options as opts
from edgeseg.commands.common import (
    JsonOption, QuietOption, VerboseOption, cli_errors, err, exit_after_signals, interrupt_exits_130, out, print_json, progress_bar,
    stop_on_signals,
)
from edgeseg.errors import EdgesegError, UsageError

if TYPE_CHECKING:
    from edgeseg.edge.outputs import Outputs

DEMO_CLASSIFIER, DEMO_SEGMENTER, DEMO_CLIP = assets.CLASSIFIER, assets.SEGMENTER, assets.CLIP


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_usage(gate: Optional[float], threads: int, backend: str, url: Optional[str]) -> None:
    """Refuse option values that cannot work before anything is opened (exit 2)."""
    from edgeseg.edge.cascade import check_gate

    if url is not None and backend != "triton":
        raise typer.BadParameter("--url is for --backend triton")
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
    camera: opts.CameraOption = None,
    source: opts.SourceOption = None,
    sources_file: opts.SourcesFileOption = None,
    max_batch: opts.MaxBatchOption = None,
    batch_timeout: opts.BatchTimeoutOption = 20.0,
    classifier: opts.ClassifierOption = None,
    segmenter: opts.SegmenterOption = None,
    backend: opts.BackendOption = "auto",
    url: opts.UrlOption = None,
    gate: opts.GateOption = None,
    jsonl: opts.JsonlOption = None,
    video: opts.VideoOption = None,
    codec: opts.CodecOption = "auto",
    save_defects: opts.SaveDefectsOption = None,
    submission: opts.SubmissionOption = None,
    mqtt: opts.MqttOption = None,
    mqtt_queue: opts.MqttQueueOption = 1000,
    show: opts.ShowOption = False,
    metrics: opts.MetricsOption = None,
    view: opts.ViewOption = None,
    view_token: opts.ViewTokenOption = None,
    opcua: opts.OpcuaOption = None,
    opcua_node: opts.OpcuaNodeOption = None,
    opcua_queue: opts.OpcuaQueueOption = 1000,
    save_uncertain: opts.SaveUncertainOption = None,
    uncertain_band: opts.UncertainBandOption = 0.1,
    uncertain_pixels: opts.UncertainPixelsOption = 0.25,
    uncertain_rate: opts.UncertainRateOption = 6.0,
    loop: opts.LoopOption = False,
    max_frames: opts.MaxFramesOption = None,
    rate: opts.RateOption = None,
    source_timeout: opts.SourceTimeoutOption = 5.0,
    reconnect: opts.ReconnectOption = None,
    require_all: opts.RequireAllOption = False,
    threads: opts.ThreadsOption = 0,
    append: opts.AppendOption = False,
    models_from: opts.ModelsFromOption = None,
    shadow: opts.ShadowOption = 0,
    skip_verify: opts.SkipVerifyOption = False,
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
    _check_usage(gate, threads, backend, url)
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
    failures = _failures(report, outputs, stopped=bool(received))
    _print_report(report, outputs, failures, json_output, demo)
    if failures:
        raise typer.Exit(1)
    exit_after_signals(received)


def _failures(report: Dict[str, Any], outputs: "Outputs", stopped: bool) -> List[str]:
    """What makes the run a failure (exit 1): an output not fully written, a source error, no
    frame processed (unless a signal stopped the run first)."""
    failures = outputs.failures()
    if report["source"]["error"]:
        failures.insert(0, report["source"]["error"])
    if not report["frames"] and not stopped:
        failures.append(f"no frame was processed ({report['stopped_by']}; {report['source']['corrupt']} unreadable frame(s) skipped), so nothing was written")
    return failures


def _print_report(report: Dict[str, Any], outputs: "Outputs", failures: List[str], json_output: bool, demo: bool) -> None:
    """The report for a machine (--json) or a person (tables, what was written), then the
    warnings and errors on stderr."""
    if json_output:
        print_json(dict(report, errors=failures))
    else:
        from edgeseg.edge.latency import camera_table, latency_table

        title = f"edgeseg run · {report['source']['uri']} · {report['backends'].get('segmenter', '')}"
        out.print(latency_table(report, title=title))
        if len(report["cameras"]) > 1:
            out.print(camera_table(report))
        for text in outputs.lines():
            out.print(escape(text))
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
