"""`edgeseg run`'s options, declared once here so that run.py's signature only lists them:
the sources, the models, the outputs for files, the line (MQTT, metrics, the live view, OPC UA,
frames worth relabelling) and the run's limits."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgeseg.commands.common import Codec, RunBackend

CameraOption = Annotated[Optional[int], typer.Option("--camera", help="Camera index (V4L2 /dev/videoN on Linux).")]
SourceOption = Annotated[
    Optional[List[str]],
    typer.Option(
        "--source",
        "-s",
        help="Video file, image folder, glob ('strips/*.png'), /dev/videoN, csi://N, rtsp://... or a GStreamer "
        "pipeline; repeat it for several cameras, batched together. Default: the bundled demo clip.",
    ),
]
SourcesFileOption = Annotated[
    Optional[Path], typer.Option("--sources", help="A text file of sources, one per line (# comments), added to --source.")
]
MaxBatchOption = Annotated[
    Optional[int],
    typer.Option("--max-batch", min=1, help="Most frames per inference batch across cameras (default: one per camera; capped by the engine's profile)."),
]
BatchTimeoutOption = Annotated[
    float, typer.Option("--batch-timeout", min=0.0, help="Milliseconds a batch waits for the cameras that have not given it a frame yet.")
]
ClassifierOption = Annotated[
    Optional[Path], typer.Option("--classifier", help="Classifier .onnx or .engine (card beside it). Default: bundled demo.")
]
SegmenterOption = Annotated[
    Optional[Path], typer.Option("--segmenter", help="ResUNet .onnx or .engine (card beside it). Default: bundled demo.")
]
BackendOption = Annotated[
    RunBackend,
    typer.Option(
        "--backend",
        "-b",
        help="auto: by file (.engine -> tensorrt, .xml -> openvino, .onnx -> onnxruntime with CUDA, else openvino where "
        "installed, else onnxruntime: edgeseg.edge.registry.auto_backend); triton: the cascade on the Triton server at --url (models come from the server).",
    ),
]
UrlOption = Annotated[
    Optional[str], typer.Option("--url", help="Triton server for --backend triton (default grpc://127.0.0.1:8001; `edgeseg serve` starts one).")
]
GateOption = Annotated[
    Optional[float],
    typer.Option("--gate", help="Defect probability from which the ResUNet runs (default: the classifier card's; 0 = always)."),
]
JsonlOption = Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON line per frame here (flushed per line).")]
VideoOption = Annotated[Optional[Path], typer.Option("--video", help="Write the annotated video here (.mp4, .avi, .mkv or .webm).")]
CodecOption = Annotated[
    Codec, typer.Option("--codec", help="Video codec: auto = the container's (mp4v, MJPG, VP8); h264 plays in browsers where this OpenCV has it.")
]
SaveDefectsOption = Annotated[
    Optional[Path],
    typer.Option("--save-defects", help="Save each gated frame (PNG), a crop per defect and DIR/index.jsonl here, for review."),
]
SubmissionOption = Annotated[
    Optional[Path],
    typer.Option("--submission", help="Write a Kaggle Severstal submission CSV (ImageId_ClassId,EncodedPixels); image folder or glob sources."),
]
MqttOption = Annotated[
    Optional[str],
    typer.Option("--mqtt", help="Publish each defective frame's record to mqtt://host[:port]/topic (QoS 1; heartbeat on topic/heartbeat)."),
]
MqttQueueOption = Annotated[
    int, typer.Option("--mqtt-queue", min=1, help="MQTT messages kept unacknowledged while the broker is away; beyond, new ones are dropped (counted).")
]
ShowOption = Annotated[bool, typer.Option("--show", help="Show annotated frames in a window (q or Esc stops).")]
MetricsOption = Annotated[
    Optional[str],
    typer.Option("--metrics", help="Serve Prometheus /metrics, /healthz and /readyz at [HOST:]PORT (loopback unless HOST is given, e.g. 0.0.0.0:9108)."),
]
LoopOption = Annotated[bool, typer.Option("--loop", help="Start a file or folder again when it ends.")]
MaxFramesOption = Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop each camera after this many frames.")]
RateOption = Annotated[
    Optional[float],
    typer.Option("--rate", help="Feed a file or folder at this many frames/s like a live camera (frames the pipeline cannot take are dropped)."),
]
SourceTimeoutOption = Annotated[
    float,
    typer.Option("--source-timeout", min=0.1, help="Live sources: seconds without a frame before reconnecting; RTSP: also the connect and read limit."),
]
ReconnectOption = Annotated[
    Optional[int],
    typer.Option("--reconnect", min=0, help="Live sources: end with an error after this many failed reconnects in a row (default: keep trying, with back-off up to 5 s)."),
]
RequireAllOption = Annotated[
    bool, typer.Option("--require-all", help="Several cameras: stop when one does not open at the start (default: run the others, keep trying it).")
]
ThreadsOption = Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime / OpenVINO threads per model (0 = one per core; at most the cores).")]
AppendOption = Annotated[bool, typer.Option("--append", help="Add this run's lines to an existing --jsonl instead of replacing it.")]
ModelsFromOption = Annotated[
    Optional[Path],
    typer.Option("--models-from", help="Watch this folder for a new model pair (named as --classifier / --segmenter, cards beside): verified, then swapped in between two frames without stopping; SIGHUP reloads."),
]
ShadowOption = Annotated[int, typer.Option("--shadow", min=0, help="Run a new model pair beside the running one on this many live frames first and report their agreement.")]
SkipVerifyOption = Annotated[
    bool, typer.Option("--skip-verify", help="Do not check the models on their golden sets first (`edgeseg verify`); the header record says so.")
]

ViewOption = Annotated[
    Optional[str],
    typer.Option("--view", help="Serve a read-only live view (annotated stream, counts, latest defects) at host:port, or a port on 127.0.0.1."),
]
ViewTokenOption = Annotated[
    Optional[str], typer.Option("--view-token", envvar="EDGESEG_VIEW_TOKEN", help="Require this token (?token= or an X-Edgeseg-Token header) for --view.")
]
OpcuaOption = Annotated[
    Optional[str],
    typer.Option("--opcua", help="Write each frame's verdict to OPC UA variables of the server at opc.tcp://host:port/path (user:password@host for a login)."),
]
OpcuaNodeOption = Annotated[
    Optional[str], typer.Option("--opcua-node", help="NodeId of the object holding the verdict variables (default: the object `edgeseg` under Objects).")
]
OpcuaQueueOption = Annotated[
    int, typer.Option("--opcua-queue", min=1, help="Verdicts kept while the OPC UA server is away; beyond, the oldest are dropped (counted).")
]
SaveUncertainOption = Annotated[
    Optional[Path],
    typer.Option("--save-uncertain", help="Keep frames the models were unsure about in the Severstal layout (train_images/ + train.csv), to relabel and train on."),
]
UncertainBandOption = Annotated[
    float, typer.Option("--uncertain-band", help="Probability distance from the gate or a class threshold that counts as unsure.")
]
UncertainPixelsOption = Annotated[
    float, typer.Option("--uncertain-pixels", help="Share of a class's candidate pixels within the band that makes its mask unsure.")
]
UncertainRateOption = Annotated[
    float, typer.Option("--uncertain-rate", min=0.0, help="Most uncertain frames kept per minute (0: all).")
]
