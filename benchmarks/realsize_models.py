"""Real-size CLIP architectures with RANDOM weights, built offline from configs (speed does not depend
on the weights): what bench_clip_cpu.py measures. Nothing is downloaded.

    clip-b32     transformers CLIPConfig() defaults = openai/clip-vit-base-patch32's sizes, with the real
                 CLIP BPE vocabulary and merges (open_clip's bundled bpe_simple_vocab_16e6.txt.gz) as a
                 CLIPTokenizer(Fast), and CLIPImageProcessor defaults (shortest edge 224, centre crop 224)
    siglip-b16   SiglipConfig() defaults = google/siglip-base-patch16-224's sizes (vocab 32000, 64 tokens),
                 with a small SentencePiece model trained here (the real one is a hub file; tokenisation
                 cost is negligible beside the towers) and SiglipImageProcessor defaults (224x224 squash)
    open_clip ViT-B-32   open_clip.create_model('ViT-B-32', pretrained=None) saved as a safetensors
                 file, for `open_clip:ViT-B-32/FILE`
"""

from __future__ import annotations

import io
import sys
from pathlib import Path


def clip_tokenizer(max_length: int = 77):
    """open_clip's bundled BPE (the same vocabulary and merges as openai/clip-vit-base-patch32) as a fast
    CLIPTokenizer: what the hub folder's vocab.json + merges.txt give."""
    import json
    import tempfile

    import open_clip
    from transformers import CLIPTokenizer

    simple = open_clip.tokenizer.SimpleTokenizer()
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "vocab.json").write_text(json.dumps(simple.encoder), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    bos, eos = simple.decoder[simple.sot_token_id], simple.decoder[simple.eot_token_id]  # ids 49406, 49407
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), bos_token=bos, eos_token=eos,
                         pad_token=eos, unk_token=eos, model_max_length=max_length)


def _corpus() -> list[str]:
    """Some English sentences found offline (docstrings of installed packages) to train a SentencePiece on."""
    import re

    import transformers

    root = Path(transformers.__file__).parent / "models" / "clip"
    text = " ".join(p.read_text(encoding="utf-8", errors="ignore") for p in sorted(root.glob("*.py")))
    sentences = [s.strip() for s in re.split(r"[.\n]", text) if len(s.split()) > 3]
    return sentences + [f"a photo of a {w}" for w in ("cat", "dog", "beach", "mountain", "car", "child", "tree")]


def save_clip(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(CLIPConfig(projection_dim=512)).save_pretrained(folder)
    clip_tokenizer(77).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def save_siglip(folder: Path) -> Path:
    import sentencepiece
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=2000, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2,
        hard_vocab_limit=False)
    (folder / "spiece.model").write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)
    # SiglipConfig() defaults are siglip-base-patch16-224's: vocab 32000, 64 positions, 768 wide, 12 layers.
    SiglipModel(SiglipConfig(text_config={"pad_token_id": 1, "eos_token_id": 1})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def save_open_clip(folder: Path, arch: str = "ViT-B-32") -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def build_all(root: Path) -> dict[str, str]:
    """{name: --model reference}, building what is missing."""
    root.mkdir(parents=True, exist_ok=True)
    refs = {"builtin": "builtin"}  # the packaged towers: the baseline
    if not (root / "clip-b32" / "model.safetensors").is_file():
        save_clip(root / "clip-b32")
    refs["clip-b32"] = f"hf:{root / 'clip-b32'}"
    if not (root / "siglip-b16" / "model.safetensors").is_file():
        save_siglip(root / "siglip-b16")
    refs["siglip-b16"] = f"hf:{root / 'siglip-b16'}"
    file = root / "open_clip" / "ViT-B-32-random.safetensors"
    if not file.is_file():
        save_open_clip(root / "open_clip")
    refs["open_clip-b32"] = f"open_clip:ViT-B-32/{file}"
    return refs


if __name__ == "__main__":
    print(build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tmv-bench-clip-cpu/models")))  # noqa: T201
