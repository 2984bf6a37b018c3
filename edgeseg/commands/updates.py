"""`edgeseg run`'s model updates without stopping: `--models-from DIR` watched, SIGHUP reloads.

A thin shell over Inspector.update and edgeseg.edge.swap.ModelWatcher: the new pair is the
files in DIR named as the running ones (`--classifier` / `--segmenter`, the demo's otherwise),
offered once they stopped changing; SIGHUP offers them at once, or, without --models-from, the
files the run started with (replaced in place). What happens is said on stderr as it happens
(a rollback as a warning) and listed in the run report (`model_updates`).
"""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any, Iterator, Optional

from edgeseg.errors import UsageError


@contextlib.contextmanager
def model_updates(inspector: Any, classifier: Optional[Path], segmenter: Optional[Path], folder: Optional[Path], shadow: int) -> Iterator[None]:
    """Watch for new models while the block runs (`inspector`: the run's Inspector;
    classifier / segmenter: its model files, None when a Triton server holds them)."""
    from edgeseg.edge.swap import ModelWatcher

    if classifier is None or segmenter is None:
        if folder is not None:
            raise UsageError("--models-from updates local models", hint="with --backend triton, update the server's model repository")
        yield
        return
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--models-from {folder} is not a folder", hint=f"create it; a new pair is copied in as {classifier.name} and {segmenter.name} with their cards")
    paths = (folder / classifier.name, folder / segmenter.name) if folder is not None else (classifier, segmenter)
    watcher = ModelWatcher(*paths, lambda c, s: inspector.update(c, s, shadow=shadow), lambda: inspector.model_sha256, poll=folder is not None)
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    previous = signal.signal(hangup, lambda _signum, _frame: watcher.reload()) if hangup is not None else None
    try:
        with watcher:
            yield
    finally:
        if hangup is not None:
            signal.signal(hangup, previous)
