"""App folders for tests: files written with their indentation taken off."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_file(root: Path, relpath: str, text: str) -> str:
    """Write an app file for a test: `text` dedented (leading newline dropped) to `root/relpath`.

    Creates the folders on the way and returns the text written, so a test can
    work out the line numbers an error should name.
    """
    text = textwrap.dedent(text).lstrip("\n")
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
