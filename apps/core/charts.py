"""The charting library: Plotly's own bundled ``plotly.min.js`` from the ``plotly`` Python package.

Served by Kyara itself (no CDN: the platform must work without the internet), under a URL that holds
the library's version so browsers may cache it for good, gzipped once per process for phones.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path


class ChartLibraryMissing(RuntimeError):
    pass


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    try:
        import plotly
    except ImportError as exc:  # the pages still render; charts say why they are missing
        raise ChartLibraryMissing("The 'plotly' package is not installed (pip install -r requirements.txt).") from exc
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ChartLibraryMissing(f"plotly {plotly.__version__} has no bundled plotly.min.js at {path}.")
    return path


@lru_cache(maxsize=1)
def plotly_version() -> str:
    try:
        import plotly
    except ImportError:
        return "missing"
    return plotly.__version__


@lru_cache(maxsize=2)
def plotly_js_bytes(compressed: bool) -> bytes:
    data = plotly_js_path().read_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compressed else data
