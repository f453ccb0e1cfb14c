"""`tmv serve`: load the model and index once and serve the search page and JSON API."""

from __future__ import annotations

import click
from rich.markup import escape
from tinymvlm.cli.console import err, friendly_errors, model_option, note_model, quiet_option, setup_logging


def bind(host: str, port: int):
    """A listening socket on host:port (port 0: a free one), bound before the server starts so the
    address it prints is the one that answers."""
    import socket

    from tinymvlm.errors import TmvError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TmvError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from exc
    sock.listen(128)
    return sock


@click.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder. Default: $TMV_INDEX, else ~/.local/share/tinymvlm/index ($XDG_DATA_HOME).")
@model_option("Default: the one the index was built with.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address lets other machines search the index.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another name browsers use to reach this server (e.g. behind a proxy). Repeatable.")
@click.option("--thumbs", "thumb_dir", type=click.Path(file_okay=False),
              help="Thumbnail cache folder. Default: $XDG_CACHE_HOME/tinymvlm/thumbs (~/.cache/...).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=20, show_default=True,
              help="Largest query image accepted, in MB.")
@click.option("--device", default="auto", show_default=True, help="Device for embedding queries: auto, cpu, cuda, cuda:1 ...")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: fp32 (a single query gains nothing from bf16).")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@quiet_option()
@friendly_errors
def serve(index_dir, model, host, port, allow_hosts, thumb_dir, max_upload_mb, device, precision, verbose, quiet) -> None:
    """Serve a search page and JSON API for an index, on http://127.0.0.1:8000/ by default.

    The model and index are loaded once, so queries take milliseconds; files added by a running
    `tmv index` appear as they are committed. Stop with Ctrl-C.
    """
    setup_logging(verbose)
    from pathlib import Path

    from tinymvlm.index import Index
    from tinymvlm.serve.hostguard import server_names

    from tinymvlm.inference.runtime import Runtime

    index = Index(index_dir, checkpoint=model, runtime=Runtime.for_queries(device, precision))
    index.info()  # no index, or an unreadable one: say so before loading anything
    note_model(index.model_choice(), quiet)
    sock = bind(host, port)  # a busy port: likewise
    names = server_names(host, allow_hosts)
    try:
        run(index, sock, host, names, Path(thumb_dir) if thumb_dir else None, max_upload_mb)
    finally:
        sock.close()


def exposure_warning(host: str, names: set[str]) -> str | None:
    """What to tell the user when the server is reachable from other machines."""
    from tinymvlm.serve.hostguard import is_loopback

    if is_loopback(host):
        return None
    return (f"listening on {host}: anyone who can reach this machine can search the index and view its "
            f"images; names accepted: {', '.join(sorted(names))}")


def run(index, sock, host: str, names: set[str], thumb_dir, max_upload_mb: float) -> None:
    import torch
    import uvicorn
    from tinymvlm.serve.app import create_app
    from tinymvlm.serve.service import Limits, SearchService
    from tinymvlm.serve.thumbnails import ThumbnailCache, default_thumb_dir

    # One query at a time on one worker thread: a single-threaded model (and scan: the query runtime's
    # one search thread) answers fastest and leaves the other cores to the HTTP side (thumbnails, uploads).
    torch.set_num_threads(1)
    service = SearchService(index, Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024)))
    try:
        err.print(f"loading {index.folder} ...", markup=False)
        service.call_sync(service.warm_up)
        service.dupes.start()
        info = service.call_sync(service.info)
        counts = info["counts"]
        app = create_app(service, ThumbnailCache(thumb_dir or default_thumb_dir()), names)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{sock.getsockname()[1]}/"
        err.print(f"serving {counts['images']} images and {counts['captions']} captions at {url}", markup=False)
        curves = f"; its training curves: {url.rstrip('/')}{info['curves']}" if info["curves"] else ""
        err.print(f"model {info['model']['checkpoint']}{curves}", markup=False)
        warning = exposure_warning(host, names)
        if warning:
            err.print(f"[yellow]warning:[/] {escape(warning)}")
        err.print("press Ctrl-C to stop", markup=False)
        config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        service.close()
