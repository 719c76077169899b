"""The public surface is pinned: changing it must be a deliberate edit here."""

from __future__ import annotations

import subprocess
import sys

import aezip
from aezip.archive.container import FORMAT_VERSION, MAGIC
from aezip.codec.codec import STREAM_MAGIC, STREAM_VERSION
from aezip.entropy import METHODS


def test_exported_names() -> None:
    assert sorted(aezip.__all__) == sorted(
        [
            "AezipError",
            "Archive",
            "Codec",
            "CorruptArchiveError",
            "FormatError",
            "ImageArchiveDataset",
            "ModelError",
            "ModelMismatchError",
            "UnsafePathError",
            "UnsupportedImageError",
            "UnsupportedVersionError",
            "__version__",
            "open",
        ]
    )
    for name in aezip.__all__:
        assert getattr(aezip, name) is not None


def test_format_constants() -> None:
    assert MAGIC == b"\x89AEZ\r\n\x1a\n" and FORMAT_VERSION == (1, 0)
    assert STREAM_MAGIC == b"\x89AEI" and STREAM_VERSION == 1
    assert METHODS == {"zstd": 1, "ans": 2, "ans-ctx": 3}


def test_import_is_cheap() -> None:
    """``import aezip`` must not pull in torch (CLI start-up, worker processes)."""
    code = "import sys, aezip, aezip.archive.container; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
