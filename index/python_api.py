"""The Python API, mirroring `tmv index` and `tmv search`:

    from tinymvlm.index import Index
    idx = Index("~/.tmv-index", checkpoint="runs/latest-run")
    report = idx.add(["~/Photos"], captions=["captions.txt"])
    for hit in idx.search("cat + in snow - dog", k=5):
        print(hit.rank, hit.score, hit.path)

Which model: `checkpoint` when given (anything `--model` takes, see tinymvlm.models.resolve); otherwise the
checkpoint an existing index was built with, if that file still exists (the built-in model is rebuilt if
the cache lost it); otherwise the best checkpoint of the most recently trained run under ./runs or
$TMV_RUNS, or the built-in model (tinymvlm.models.builtin) when there is none. An index keeps its model: to
re-embed with another one, pass `checkpoint=...` with `rebuild=True`. Any other model is refused, before it is even loaded (its
fingerprint is in the checkpoint's metadata).

A text query runs on the model's ONNX text encoder when there is one (tinymvlm/inference/text_onnx.py) and the
runtime asks for nothing else (a CUDA device, bf16): torch is then never imported, and the checkpoint's
weights never read. Any other query, or a model without the file, uses torch, and writes the file for
the next text search; `add` writes it too, as it has the model loaded anyway.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tinymvlm.index.catalog import KINDS, Catalog
from tinymvlm.index.duplicates import DuplicateGroup
from tinymvlm.index.filters import SearchFilter
from tinymvlm.index.query_syntax import Term, parse_query
from tinymvlm.index.scan import normalise_roots, plan_images
from tinymvlm.index.searcher import Hit, Searcher, combine
from tinymvlm.index.shard import Shard, check_role
from tinymvlm.index.store import IndexStore, ModelInfo
from tinymvlm.index.update import (
    SYNC_EVERY_S,
    IndexReport,
    Progress,
    apply_metadata,
    describe_images,
    embed_planned,
    index_captions,
)
from tinymvlm.index.vectors import IndexSpec
from tinymvlm.index.writer_lock import IndexLock

from tinymvlm import killpoint
from tinymvlm.errors import TmvError
from tinymvlm.inference import text_onnx
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.builtin import builtin_checkpoint, is_builtin
from tinymvlm.models.metadata import read_metadata
from tinymvlm.models.resolve import INDEX_BUILT, ModelChoice, choose_model


class Index:
    """One index folder (None: the default folder, see store.default_index_dir) and its model, run
    under `runtime` (default: auto device and precision; see tinymvlm.inference.runtime)."""

    def __init__(self, folder: str | Path | None = None, checkpoint: str | Path | None = None,
                 runtime: Runtime | None = None) -> None:
        self.store = IndexStore(folder)
        self.checkpoint = checkpoint
        self.runtime = runtime or Runtime()
        self._model = self._tokenizer = self._info = self._meta = None
        self._encoder: text_onnx.TextEncoder | None | bool = False  # False: not looked for yet
        self._encoder_unreadable = False  # a file is there, but cannot be trusted: export it again
        self._searcher: Searcher | None = None

    @property
    def folder(self) -> Path:
        return self.store.folder

    # ----------------------------------------------------------------------------------- model

    def model_choice(self) -> ModelChoice:
        """The checkpoint this index uses and why (the rule in the module docstring)."""
        if self.checkpoint is not None:
            return choose_model(self.checkpoint)
        if self.store.exists():
            built = Path(self.store.read_manifest()["model"]["checkpoint"])
            if built.is_file():
                return ModelChoice(built, None, INDEX_BUILT)
            if is_builtin(built):  # the user cache was cleared: the same model is rebuilt
                return ModelChoice(builtin_checkpoint(), None, INDEX_BUILT)
        return choose_model(None)

    def checkpoint_path(self) -> Path:
        """The checkpoint this index uses (see `model_choice`)."""
        return self.model_choice().path

    def model_info(self) -> ModelInfo:
        """Identity of the model from its checkpoint's metadata, without building it."""
        if self._info is None:
            path = self.checkpoint_path()
            meta = self._meta = read_metadata(path)
            config = meta["model_config"]
            self._info = ModelInfo(meta["fingerprint"], str(path.resolve()), int(config["embed_dim"]), meta["image_arch"])
        return self._info

    def load_model(self):
        """(model, tokenizer) in torch, loaded once: what indexing and image queries embed with."""
        if self._model is None:
            from tinymvlm.models.checkpoint import load_checkpoint

            killpoint.reached("model load")
            model, tokenizer, _ = load_checkpoint(self.model_info().checkpoint)
            self._model, self._tokenizer = model.to(self.runtime.torch_device).eval(), tokenizer
        return self._model, self._tokenizer

    def text_encoder(self) -> text_onnx.TextEncoder | None:
        """The model's ONNX text encoder, or None where text queries run on torch (no file, or the
        runtime asks for a CUDA device or bf16)."""
        if self._encoder is False:
            runtime = self.runtime
            cpu_fp32 = runtime.device in ("auto", "cpu") and runtime.precision in ("auto", "fp32")
            fingerprint = self.model_info().fingerprint
            self._encoder = text_onnx.TextEncoder.open(fingerprint, self._meta) if cpu_fp32 else None
            self._encoder_unreadable = cpu_fp32 and self._encoder is None and text_onnx.encoder_exists(fingerprint)
        return self._encoder

    def _prepare_text_encoder(self) -> None:
        """Export the loaded model's text encoder for later text searches, unless done (or refused) before."""
        info = self.model_info()
        if self._model is not None and (self._encoder_unreadable or text_onnx.needs_export(info.fingerprint)):
            if text_onnx.export(self._model, self._tokenizer, info.fingerprint, self._meta) is not None:
                self._encoder, self._encoder_unreadable = False, False  # look again on the next text query

    # ------------------------------------------------------------------------------------- add

    def add(self, paths: Sequence[str | Path] = (), captions: Sequence[str | Path] = (), exclude: Sequence[str] = (),
            caption_column: str | None = None, spec: IndexSpec | None = None, runtime: Runtime | None = None,
            rebuild: bool = False, wait: bool = False, progress: Progress | None = None,
            shard: Shard | None = None) -> IndexReport:
        """Bring the index up to date with image folders/files and caption files. With no paths and no
        captions, re-scans the folders indexed before. `spec` None keeps the index's type settings.
        `runtime` None: the index's own. `shard`: this folder holds one shard (shard.py) and takes
        only its share of the images; captions go to shard 0 alone (text is cheap to embed next to
        images)."""
        progress = progress or Progress()
        runtime = (runtime or self.runtime).resolve()
        report = IndexReport()
        # Inputs first, so a failing command creates nothing: no index folder, no lock file.
        info = self.model_info()  # resolved before a rebuild removes the manifest that names the checkpoint
        roots = normalise_roots(paths) if paths else []
        for caption_file in captions:
            if not Path(caption_file).expanduser().is_file():
                raise TmvError(f"--captions {caption_file}: no such file")
        if not paths and not captions and not self.store.exists():
            raise TmvError(f"nothing to index: give image folders (tmv index PATH) or --captions FILE; "
                           f"{self.folder} holds no index yet")
        with IndexLock(self.folder, wait=wait):
            self._close_searcher()
            if rebuild and self.store.folder.exists():
                self.store.wipe()
            if self.store.exists():
                manifest = self.store.read_manifest()
            else:
                manifest = self.store.create(info, spec or IndexSpec(), {"shard": shard.to_dict()} if shard else None)
            check_role(self.folder, manifest, shard)
            self.store.check_model(manifest, info)
            if spec is not None:
                manifest["spec"] = spec.to_dict()
            spec = IndexSpec(**manifest["spec"])
            catalog = Catalog(self.store.catalog_path)
            try:
                if not paths and not captions:
                    roots = [r for r in catalog.roots() if Path(r).exists()]
                    if not roots:
                        raise TmvError(f"nothing to index: give image folders (tmv index PATH) or --captions FILE; "
                                       f"{self.folder} has no folders recorded from earlier runs")
                if roots:
                    keep = shard.owns(roots) if shard is not None else None
                    self._add_images(catalog, manifest, spec, roots, exclude, runtime, report, progress, keep)
                    describe_images(catalog, report)
                    if paths:
                        with catalog.transaction():
                            catalog.add_roots(roots)
                if captions and (shard is None or shard.index == 0):
                    model, tokenizer = self.load_model()
                    index_captions(catalog, model, tokenizer, [str(c) for c in captions], caption_column, runtime,
                                   report, progress)
                for kind in KINDS:
                    manifest = self.store.sync(catalog, manifest, kind, spec)
                manifest["counts"]["skipped"] = catalog.count_skipped()
                self.store.write_manifest(manifest)
                report.counts = dict(manifest["counts"])
            finally:
                catalog.close()
        self._prepare_text_encoder()
        return report

    def _add_images(self, catalog: Catalog, manifest: dict, spec: IndexSpec, roots: list[str], exclude: Sequence[str],
                    runtime: Runtime, report: IndexReport, progress: Progress,
                    keep: Callable[[str], bool] | None = None) -> None:
        plan = plan_images(catalog, roots, exclude, progress.scanned, keep)
        progress.planned(plan)
        report.scanned, report.unchanged, report.known_bad = plan.scanned, plan.unchanged, plan.known_bad
        report.passed_over = plan.passed_over
        apply_metadata(catalog, plan, report)
        if not plan.embed:
            return
        model, _ = self.load_model()
        last_sync = [time.monotonic()]

        def periodic_sync() -> None:
            if time.monotonic() - last_sync[0] > SYNC_EVERY_S:
                self.store.sync(catalog, manifest, "images", spec)
                last_sync[0] = time.monotonic()

        embed_planned(catalog, model, plan, runtime, report, progress, on_commit=periodic_sync)

    # ---------------------------------------------------------------------------------- search

    def _close_searcher(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def searcher(self) -> Searcher:
        """The open index, checked against the model; FAISS runs with the runtime's search threads."""
        if self._searcher is None:
            self.runtime.apply_threads()
            searcher = Searcher(self.store)
            self.store.check_model(searcher.manifest, self.model_info())
            self._searcher = searcher
        return self._searcher

    def embed_query(self, terms: list[Term]) -> np.ndarray:
        """The combined, normalised query vector of parsed terms."""
        texts_only = all(t.image is None for t in terms)
        encoder = self.text_encoder() if texts_only else None
        if encoder is not None:
            return combine(terms, encoder.encode([t.text for t in terms]))
        from tinymvlm.inference.embed import embed_query_images, embed_texts

        model, tokenizer = self.load_model()
        runtime = replace(self.runtime, workers=0)  # a few files: decoding in this process is quickest
        rows = np.zeros((len(terms), model.embed_dim), dtype=np.float32)
        texts = [(n, t.text) for n, t in enumerate(terms) if t.text is not None]
        if texts:
            rows[[n for n, _ in texts]] = embed_texts(model, tokenizer, [t for _, t in texts], runtime)
        images = [(n, t.image) for n, t in enumerate(terms) if t.image is not None]
        if images:
            rows[[n for n, _ in images]] = embed_query_images(model, [p for _, p in images], runtime)
        if texts_only:
            self._prepare_text_encoder()
        return combine(terms, rows)

    def search(self, query: str | None = None, image: str | Path | Sequence[str | Path] | None = None, k: int = 10,
               texts: bool = False, nprobe: int | None = None, ef_search: int | None = None,
               literal: bool = False, where: SearchFilter | None = None, min_score: float | None = None) -> list[Hit]:
        """Top-k images (or captions with `texts=True`) for a query (the grammar in query_syntax.py; `literal`:
        the whole text as one phrase) and/or query image(s); `where` limits the images by date and
        folder (filters.py), `min_score` drops weaker hits."""
        images = [] if image is None else [str(image)] if isinstance(image, (str, Path)) else [str(i) for i in image]
        terms = parse_query(query, images, literal)  # a bad query fails before the index is opened
        searcher = self.searcher()  # a model mismatch fails before the model is loaded
        return searcher.search(self.embed_query(terms), k, "captions" if texts else "images", nprobe, ef_search,
                               where, min_score)

    def search_vector(self, vector: np.ndarray, k: int = 10, texts: bool = False, nprobe: int | None = None,
                      ef_search: int | None = None, where: SearchFilter | None = None,
                      min_score: float | None = None) -> list[Hit]:
        """Top-k for a ready embedding (e.g. one taken from the catalogue)."""
        return self.searcher().search(vector, k, "captions" if texts else "images", nprobe, ef_search, where, min_score)

    def duplicates(self, threshold: float | None = None, look_threshold: float | None = None,
                   on_decoded: Callable[[int, int], None] | None = None) -> list[DuplicateGroup]:
        """Groups of near-duplicate images, largest first (duplicates.py); needs no model, and deletes nothing."""
        from tinymvlm.index import duplicates

        searcher = Searcher(self.store)  # opened without the model check: the stored vectors are all it needs
        try:
            return duplicates.find_duplicates(
                searcher.catalog, searcher.manifest["embed_dim"],
                duplicates.DEFAULT_THRESHOLD if threshold is None else threshold,
                duplicates.LOOK_THRESHOLD if look_threshold is None else look_threshold, on_decoded=on_decoded)
        finally:
            searcher.close()

    def info(self) -> dict:
        return self.store.read_manifest()

    def spec_with(self, index_type: str | None = None, rebuild: bool = False, **settings: int | None) -> IndexSpec | None:
        """The index type settings a run asks for: those given (None: not given) over the ones this
        index keeps (unless it is rebuilt); None when nothing is given, so the index keeps its own."""
        given = {k: v for k, v in settings.items() if v is not None}
        if index_type is None and not given:
            return None
        stored = self.info()["spec"] if self.store.exists() and not rebuild else {}
        return IndexSpec(**{**stored, **given, **({"type": index_type} if index_type is not None else {})})

    def evaluate(self, pairs, embedded, ks: Sequence[int]) -> dict:
        """Recall of evaluation queries through this index beside exact search (see recall.py)."""
        from tinymvlm.evaluation.index_retrieval import evaluate_index

        return evaluate_index(self.searcher(), pairs, embedded, ks)

    # --------------------------------------------------- by catalogue id (for `tmv serve`)

    def folders(self) -> list[str]:
        """The folders indexed so far (what a bare `tmv index` re-scans)."""
        return self.searcher().catalog.roots()

    def label_of(self, id: int, texts: bool = False) -> str | None:
        """The path of image `id` (the caption of caption `id` with `texts=True`); None when gone."""
        return self.searcher().catalog.labels("captions" if texts else "images", [id]).get(id)

    def vector_of(self, id: int, texts: bool = False) -> np.ndarray | None:
        """The stored embedding of image (or caption) `id`, for "more like this"; None when gone."""
        catalog, kind = self.searcher().catalog, "captions" if texts else "images"
        with catalog.snapshot():
            if id not in catalog.labels(kind, [id]):
                return None
            return catalog.vectors(kind, [id], self.searcher().manifest["embed_dim"])[0]

    def close(self) -> None:
        self._close_searcher()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
