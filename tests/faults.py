"""What the fault tests check after a SIGKILL: nothing half-written, in the media folder or the database.

- every image row's file is there and holds the bytes its sha256 names, its thumbnail is there and decodes;
- no two rows hold the same bytes, no source post is stored twice;
- every file under a content-addressed name is whole (an original's bytes hash to its name); anything else is
  a temporary ``.<name>.*.part`` (an atomic write that never reached its rename), which check_media lists;
- returned: the whole files no row names (orphans: an ingest killed between its file and its row).
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

FINAL_NAME = re.compile(r"^[0-9a-f]{64}\.[a-z0-9]+$")
TEMPORARY_NAME = re.compile(r"^\.[0-9a-f]{64}\.[a-z0-9]+\..*\.part$")


@dataclass
class MediaState:
    rows: int
    orphans: list[str]  # whole files under a final name that no row names
    temporary: list[str]  # unfinished writes under a temporary name


def _decodes(path: Path) -> bool:
    try:
        with PILImage.open(path) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means the file is not a whole picture
        return False


def assert_nothing_half_written() -> MediaState:
    from django.conf import settings

    from apps.characters.models import Image

    root = Path(settings.MEDIA_ROOT)
    named: set[str] = set()
    rows = list(Image.objects.values_list("pk", "sha256", "bytes", "file", "thumbnail", "source_site",
                                          "source_post_id"))
    for pk, sha256, size, file, thumbnail, _, _ in rows:
        data = (root / file).read_bytes()  # a row without its file fails here
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256, f"image {pk}: {file} is not its bytes"
        assert thumbnail and _decodes(root / thumbnail), f"image {pk}: thumbnail {thumbnail!r} missing or broken"
        named.update((file, thumbnail))
    twice = [sha for sha, n in Counter(row[1] for row in rows).items() if n > 1]
    assert not twice, f"the same bytes stored twice: {twice}"
    posts = Counter((row[5], row[6]) for row in rows if row[6])
    assert not [post for post, n in posts.items() if n > 1], f"a source post stored twice: {posts.most_common(3)}"

    orphans, temporary = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if TEMPORARY_NAME.match(path.name):
            temporary.append(relative)
            continue
        assert FINAL_NAME.match(path.name), f"{relative}: neither a content-addressed name nor a temporary one"
        if relative.startswith("images/"):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == path.name.split(".")[0], f"{relative} is not whole: its bytes hash to {digest}"
        else:
            assert _decodes(path), f"{relative} is not a whole thumbnail"
        if relative not in named:
            orphans.append(relative)
    return MediaState(rows=len(rows), orphans=orphans, temporary=temporary)


def media_name(sha256: str, extension: str = "png", prefix: str = "images") -> str:
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def sigkill(*pids: int) -> None:
    """SIGKILL each pid that is still there (in order), then wait until none of them runs any more."""
    from apps.core.jobs import process_alive

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{pids} still alive 10 s after SIGKILL"
        time.sleep(0.05)
