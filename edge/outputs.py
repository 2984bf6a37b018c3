"""A run's outputs as one set: which sinks `OutputOptions` asks for, opened together
(`open_outputs`), written as one sink, and reported uniformly.

The set checks every output path against the files the run reads and against each other
before anything is opened, gives each sink the run's header record when the first frame
arrives (`RunHeader`: then the backends are active and name their providers), counts the frames
whose model output was not a number, and after `close` says what each output holds: `report()`
for the run report, `failures()` (the run failed), `warnings()`, and `lines()` for people.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from edgeseg.edge.card import ModelCard
from edgeseg.edge.cascade import Cascade
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import RunHeader
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame, Source
from edgeseg.errors import UsageError
from edgeseg.files import PathLike, check_output_paths


@dataclass(frozen=True)
class OutputOptions:
    """What a run writes or sends (None / False: not that output); named as `edgeseg run`'s
    options. mqtt: a broker URL (edgeseg.edge.mqtt), checked on construction; so are view
    (`[host:]port` of the live view, edgeseg.edge.view) and opcua (a server URL,
    edgeseg.edge.opcua). save_uncertain: a folder (edgeseg.edge.uncertain) with its band,
    pixel share and frames per minute."""

    jsonl: Optional[PathLike] = None
    append: bool = False
    video: Optional[PathLike] = None
    codec: str = "auto"
    submission: Optional[PathLike] = None
    save_defects: Optional[PathLike] = None
    mqtt: Optional[str] = None
    mqtt_queue: int = 1000
    show: bool = False
    metrics: Optional[str] = None  # HOST:PORT of /metrics, /healthz and /readyz (edgeseg.edge.metrics)
    view: Optional[str] = None
    view_token: Optional[str] = None
    opcua: Optional[str] = None
    opcua_node: Optional[str] = None
    opcua_queue: int = 1000
    save_uncertain: Optional[PathLike] = None
    uncertain_band: float = 0.1
    uncertain_pixels: float = 0.25
    uncertain_rate: float = 6.0

    def __post_init__(self) -> None:
        if self.append and self.jsonl is None:
            raise UsageError("--append adds to a --jsonl file: give --jsonl too")
        if self.mqtt is not None:
            from edgeseg.edge.mqtt import parse_mqtt_url

            parse_mqtt_url(self.mqtt)  # a bad URL is a usage error before anything is opened
        if self.metrics is not None:
            from edgeseg.edge.metrics import parse_address

            parse_address(self.metrics)
        if self.view_token is not None and self.view is None:
            raise UsageError("--view-token protects the --view page: give --view too")
        if self.view is not None:
            from edgeseg.edge.view import parse_address

            parse_address(self.view)
        if self.opcua is not None:
            from edgeseg.edge.opcua import parse_opcua_url

            parse_opcua_url(self.opcua)

    def paths(self) -> Dict[str, Optional[PathLike]]:
        """Option name -> path of every file or folder output (None: not asked for)."""
        return {"--jsonl": self.jsonl, "--video": self.video, "--submission": self.submission, "--save-defects": self.save_defects,
                "--save-uncertain": self.save_uncertain}


class Outputs(Sink):
    """The sinks of a run, written as one: the pipeline gets this set as its sink.

    header: what the header record says (set before the first frame); the record is made at the first frame and given to every sink (`Sink.start`).
    A model pair swapped in mid-run (`restart`) gets its own header record the same way.
    """

    kind = "outputs"

    def __init__(self, sinks: Sequence[Sink], header: Optional[RunHeader] = None) -> None:
        self.sinks = list(sinks)
        self.header = header
        self._run_header = header
        self.frame_errors = 0  # frames whose model output was not a number
        self._first_error = ""
        self._closed = False

    def start(self, header: Dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.start(header)

    def restart(self, cascade: Cascade) -> None:
        """Give the sinks a header record naming `cascade` before the next frame: the pair
        swapped in mid-run (edgeseg.edge.swap) produced it. Nothing for a set without a header."""
        if self._run_header is not None:
            self.header = replace(self._run_header, cascade=cascade)

    def write(self, frame: Frame, result: FrameResult) -> None:
        if self.header is not None:
            self.start(self.header.record())
            self.header = None
        if result.error:
            self.frame_errors += 1
            self._first_error = self._first_error or f"frame {result.index} of {result.source}: {result.error}"
        for sink in self.sinks:
            sink.write(frame, result)
        self.frames += 1

    def close(self) -> None:
        """Close every sink, each even when closing an earlier one failed (that error is
        re-raised once all are closed)."""
        if self._closed:
            return
        self._closed = True
        error: Optional[BaseException] = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # noqa: B902 - the others still close
                error = error or exc
        if error is not None:
            raise error

    def report(self) -> Dict[str, Any]:
        """What is on disk now (not what was asked for): "outputs" kind -> where,
        "output_frames" kind -> frames it holds, each sink's `summary()` under its kind, and
        "frame_errors"."""
        placed = [sink for sink in self.sinks if sink.written is not None]
        report: Dict[str, Any] = {
            "outputs": {sink.kind: str(sink.written) for sink in placed},
            "output_frames": {sink.kind: sink.kept for sink in placed},
            "frame_errors": self.frame_errors,
        }
        for sink in self.sinks:
            summary = sink.summary()
            if summary:
                report[sink.kind] = summary
        return report

    def failures(self) -> List[str]:
        """One line per reason the run did not deliver what it should have."""
        failures = [sink.problem for sink in self.sinks if sink.problem]
        if self.frame_errors:
            failures.append(f"{self.frame_errors} frame(s) could not be inspected, the first {self._first_error}")
        return failures

    def warnings(self) -> List[str]:
        return [sink.warning for sink in self.sinks if sink.warning]

    def lines(self) -> List[str]:
        """The summary lines for people, e.g. "video: out.avi (40 frames)"."""
        return [line for line in (sink.describe() for sink in self.sinks) if line]


def open_outputs(
    options: OutputOptions,
    sources: Sequence[Source],
    card: ModelCard,
    inputs: Iterable[PathLike] = (),
    header: Optional[RunHeader] = None,
    on_quit: Optional[Callable[[], None]] = None,
    models_ready: Optional[Callable[[], bool]] = None,
) -> Outputs:
    """Open the outputs `options` asks for, for a run over `sources` with the segmenter `card`
    (classes, and the minimum areas the annotated video and window draw with).

    inputs: every other file the run reads (edgeseg.files.model_files of each model, a list of
    sources); with the sources' own files no output may overwrite one (UsageError).
    on_quit: what `q` / Esc in the --show window calls (the pipeline's stop).
    models_ready: whether the models are verified and active, for readiness (--metrics' /readyz,
    systemd's READY=1 when $NOTIFY_SOCKET is set; default: once the first frame went through).
    Nothing is written before the first frame. Raises UsageError / EdgesegError before any
    output is left open.
    """
    from edgeseg.edge.annotate import Annotator
    from edgeseg.edge.defects import DefectSink
    from edgeseg.edge.sinks import JsonlSink, VideoSink, WindowSink
    from edgeseg.edge.submission import SubmissionSink

    check_output_paths([*(path for source in sources for path in source.files), *inputs], options.paths())
    if options.submission is not None and not all(source.images and not source.options.loop for source in sources):
        raise UsageError("--submission needs an image folder or glob as --source, read once (no --loop)")
    annotator = Annotator(card.classes, min_area=card.thresholds.get("min_area"))
    outputs = Outputs([], header)
    add = outputs.sinks.append
    try:
        if options.jsonl is not None:
            add(JsonlSink(options.jsonl, append=options.append))
        if options.submission is not None:
            add(SubmissionSink(options.submission, card.classes))
        if options.video is not None:
            add(VideoSink(options.video, card.classes, fps=sources[0].fps if sources else None, annotator=annotator, codec=options.codec))
        if options.save_defects is not None:
            add(DefectSink(options.save_defects))
        if options.mqtt is not None:
            from edgeseg.edge.mqtt import MqttSink

            add(MqttSink(options.mqtt, queue_limit=options.mqtt_queue, sources=sources))
        if options.save_uncertain is not None:
            from edgeseg.edge.uncertain import UncertainSink

            add(UncertainSink(options.save_uncertain, card, options.uncertain_band, options.uncertain_pixels, options.uncertain_rate))
        if options.opcua is not None:
            from edgeseg.edge.opcua import OpcUaSink

            add(OpcUaSink(options.opcua, card.classes, node=options.opcua_node, queue_limit=options.opcua_queue))
        if options.view is not None:
            from edgeseg.edge.view import ViewSink

            add(ViewSink(options.view, annotator, token=options.view_token))
        if options.show:
            add(WindowSink(card.classes, on_quit=on_quit or (lambda: None), annotator=annotator))
        outputs.sinks += _watchers(options.metrics, sources, outputs.sinks, models_ready)
    except BaseException:
        outputs.close()
        raise
    return outputs


def _watchers(metrics: Optional[str], sources: Sequence[Source], sinks: Sequence[Sink], models_ready: Optional[Callable[[], bool]]) -> List[Sink]:
    """The run's health (edgeseg.edge.health) and what reports it: --metrics, and systemd's
    notifications when systemd started the run (it sets $NOTIFY_SOCKET). Health comes last, so
    its progress means every output took the frame."""
    if metrics is None and not os.environ.get("NOTIFY_SOCKET"):
        return []
    from edgeseg.edge.health import Health
    from edgeseg.edge.sdnotify import ServiceNotifier

    health = Health(sources, models_ready)
    watchers: List[Sink] = []
    try:
        if metrics is not None:
            from edgeseg.edge.metrics import MetricsSink

            watchers.append(MetricsSink(metrics, health, list(sinks)))
        if os.environ.get("NOTIFY_SOCKET"):
            watchers.append(ServiceNotifier(health))
    except BaseException:
        for watcher in watchers:
            watcher.close()
        raise
    return [*watchers, health]
