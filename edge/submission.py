"""`--submission out.csv`: results as a Kaggle Severstal submission, so a model is scored exactly
as the competition scores it.

The 2019 competition's form, which edgeseg.data.severstal reads back: a header
`ImageId_ClassId,EncodedPixels`, then one row per image and class, `<image file name>_<class>`
with the mask's RLE (edgeseg.edge.rle: column-major, 1-based) or an empty field when the class
has no pixel, a frame the classifier gated out included. ClassId is the 1-based position of the
class in the segmenter's card (Severstal's 1-4 for the cards edgeseg trains).

Fields are quoted as the csv module's default dialect does (a comma, quote, `\r` or `\n` in a
file name stays inside its field), rows end in `\r\n` (RFC 4180, which Kaggle and pandas read).

Only image sources (folder, glob) make sense: the ImageId is the frame's file. The file is
staged (edgeseg.files.StagedOutput) and put in place on close once it holds a row, so a failed
start leaves an earlier submission as it was. A submission is one whole file: when a row could
not be written (a full disk) nothing takes the target's name.
"""
from __future__ import annotations

import csv
import io
from typing import Sequence, Set

from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import FileSink
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

HEADER = ("ImageId_ClassId", "EncodedPixels")


class SubmissionSink(FileSink):
    """One row per image and class (see the module docstring); an image seen twice (a --loop,
    or two files of one name in a glob) is refused, since a submission names each image once.
    Rows go to the staged file unbuffered, a frame's rows whole or not at all."""

    kind = "submission"

    def __init__(self, path: PathLike, classes: Sequence[str]) -> None:
        super().__init__(path)
        self.classes = list(classes)
        self._seen: Set[str] = set()
        self._failed = False

    def write(self, frame: Frame, result: FrameResult) -> None:
        image_id = frame.item
        if image_id is None:
            raise EdgesegError(f"a submission needs image files, and {frame.source} delivers frames without a file name")
        if image_id in self._seen:
            raise EdgesegError(
                f"image {image_id} came twice: a submission has one row per image and class",
                hint="run once over the folder (no --loop), with distinct file names",
            )
        text = io.StringIO()
        rows = csv.writer(text)
        if not self.frames:
            rows.writerow(HEADER)
        rows.writerows((f"{image_id}_{k}", result.segmentation.rle.get(name, "")) for k, name in enumerate(self.classes, 1))
        try:
            self.line_file().write(text.getvalue().encode("utf-8"))
        except EdgesegError:
            self._failed = True
            raise
        self._seen.add(image_id)
        self.frames += 1

    def _finish(self) -> bool:
        super()._finish()
        if self._failed:
            self.problem = f"{self.path} was not written: a row failed, and a submission is one whole file"
            return False
        return True
