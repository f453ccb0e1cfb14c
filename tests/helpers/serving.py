"""Helpers shared by the `tmv serve` tests: a small real index with hostile names, and the app around it."""

from __future__ import annotations

from pathlib import Path

from conftest import make_colour_images
from tinymvlm.index import Index
from tinymvlm.serve.service import Limits, SearchService

from tinymvlm.inference.runtime import Runtime

HOSTILE_NAME = '<img src=x onerror="window.pwned=1">.png'
HOSTILE_CAPTION = "<script>window.pwned=2</script> a plain red square"


def build_index(root: Path, checkpoint: Path, captions: bool = True) -> tuple[Path, Path]:
    """(index folder, image folder): the 8 colour squares, one of them under a file name made of markup,
    and (with `captions`) three captions, one of them markup."""
    from PIL import Image

    images = root / "images"
    make_colour_images(images)
    Image.new("RGB", (48, 48), (200, 40, 120)).save(images / HOSTILE_NAME)
    caption_files = []
    if captions:
        caption_file = root / "captions.txt"
        caption_file.write_text(f"a plain blue square\na plain green square\n{HOSTILE_CAPTION}\n", encoding="utf-8")
        caption_files.append(caption_file)
    folder = root / "index"
    with Index(folder, checkpoint=checkpoint, runtime=Runtime(device="cpu")) as index:
        index.add([images], captions=caption_files, runtime=Runtime(workers=0, device="cpu"))
    return folder, images


def make_service(folder: Path, limits: Limits = Limits()) -> SearchService:
    service = SearchService(Index(folder, runtime=Runtime.for_queries("cpu")), limits)
    service.call_sync(service.warm_up)
    return service


class ServerProcess:
    """`tmv serve` in a subprocess on a free loopback port; `url` is read from its start-up line."""

    def __init__(self, *args: str, timeout: float = 180) -> None:
        import queue
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "tinymvlm.cli", "serve", "--port", "0", *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        found: queue.Queue = queue.Queue()

        def read() -> None:  # keeps draining stderr so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.lines.append(line)
                if " at http://" in line:
                    found.put(line.rsplit(" at ", 1)[1].strip())
            found.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            self.url = found.get(timeout=timeout)
        except queue.Empty:
            self.url = None
        if self.url is None:
            self.stop()
            raise RuntimeError("tmv serve did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
