"""edgeseg: trained PyTorch defect inspector -> measured streaming deployment on Jetson and GPUs.

Importing the package is cheap and torch-free; heavy dependencies load where they are used.
"""
from __future__ import annotations

__version__ = "0.1.0"
