"""`edgeseg run`'s options for the outputs an operator and a PLC use (edgeseg.edge.view,
edgeseg.edge.opcua, edgeseg.edge.uncertain), declared once here so run.py only lists them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

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
