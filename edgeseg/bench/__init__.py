"""edgeseg bench: trtexec-grade latency, throughput and efficiency figures per backend and precision."""
from __future__ import annotations
