"""Tiny pretrained-CLIP sources the tests make themselves: random Hugging Face CLIP and SigLIP folders
saved with `save_pretrained`, and a registered tiny open_clip architecture with a checkpoint file.

The CLIP folder carries a word-level tokenizer built with the `tokenizers` library (a lowercase
whitespace vocabulary of the test captions, `<s> ... </s>` around each text), since a real CLIP
tokenizer needs its vocabulary files from the hub; the SigLIP folder a real SiglipTokenizer on a tiny
SentencePiece model trained on those captions (pad = end of text, as SigLIP's; a binary file). The open_clip model uses open_clip's own bundled
BPE tokenizer, which works offline."""

from __future__ import annotations

from pathlib import Path

WORDS = ["a", "plain", "square", "photo", "of", "the", "cat", "dog", "red", "green", "blue", "yellow", "black",
         "white", "purple", "orange", "in", "snow"]
OPEN_CLIP_ARCH = "tmv-test-tiny"
OPEN_CLIP_CONFIG = {"embed_dim": 16,
                    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def word_tokenizer(max_length: int):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length)


def save_hf_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    text = dict(vocab_size=len(WORDS) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    word_tokenizer(16).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def sentencepiece_tokenizer(folder: Path, max_length: int):
    import io

    import sentencepiece
    from transformers import SiglipTokenizer

    captions = [f"a plain {w} square" for w in WORDS] + ["a photo of the cat in snow", "a dog"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions * 10), model_writer=model, vocab_size=60, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2,
        hard_vocab_limit=False)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=max_length)


def save_hf_siglip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = sentencepiece_tokenizer(folder, 32)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=32, pad_token_id=1, eos_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def register_open_clip(folder: Path) -> str:
    """Register the tiny architecture with open_clip (as a user's own model config would be)."""
    import json

    import open_clip

    config = folder / f"{OPEN_CLIP_ARCH}.json"
    config.write_text(json.dumps(OPEN_CLIP_CONFIG), encoding="utf-8")
    open_clip.add_model_config(config)
    return OPEN_CLIP_ARCH


def save_open_clip(folder: Path, seed: int = 0) -> Path:
    """A random tiny open_clip model's weights as a safetensors checkpoint file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    register_open_clip(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(OPEN_CLIP_ARCH)
    path = folder / f"tiny-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
