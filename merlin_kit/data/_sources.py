"""Data sources: the name ``"sample"`` (:func:`is_sample`), :func:`load_data` and :func:`source_as_path`."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from ._load import DataSource, load_ohlcv
from ._sample import sample


#: the data name that means :func:`sample` (a file of that name, if one exists, wins)
SAMPLE_SOURCE = "sample"


def is_sample(source: Any) -> bool:
    """Whether ``source`` is the name of the bundled synthetic data rather than a file."""
    return isinstance(source, str) and source == SAMPLE_SOURCE and not os.path.exists(source)


def load_data(source: DataSource | str, *, name: str | None = None) -> pd.DataFrame:
    """Load OHLCV from any supported source; the string ``"sample"`` means the bundled synthetic data."""
    if is_sample(source):
        return load_ohlcv(sample(), name=SAMPLE_SOURCE)
    return load_ohlcv(source, name=name)


def source_as_path(source: Any, folder: str | os.PathLike) -> tuple[str, str]:
    """A path that another process can read for ``source``, and the name to show for it.

    A path (or ``"sample"``) is returned as it is (made absolute); bytes, a
    file object or a DataFrame are written once to ``folder/data.csv``, created
    with mode 0600 (the caller's private temp folder), so that worker processes
    load exactly the bytes the caller validated.
    """
    if is_sample(source):
        return SAMPLE_SOURCE, SAMPLE_SOURCE
    if isinstance(source, (str, os.PathLike)):
        return os.path.abspath(os.fspath(source)), os.fspath(source)
    target = os.path.join(os.fspath(folder), "data.csv")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        if isinstance(source, (bytes, bytearray)):
            fh.write(bytes(source))
            name = "<uploaded bytes>"
        elif isinstance(source, pd.DataFrame):
            frame = load_ohlcv(source, name="<DataFrame>")
            fh.write(frame.to_csv(index=True, index_label="time").encode("utf-8"))
            name = "<DataFrame>"
        else:
            content = source.read()
            fh.write(content.encode("utf-8") if isinstance(content, str) else bytes(content))
            name = getattr(source, "name", None)
            name = name if isinstance(name, str) else "<file object>"
    return target, name
