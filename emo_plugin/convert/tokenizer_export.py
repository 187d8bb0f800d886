"""A Hugging Face tokenizer folder from emo_plugin's SentencePiece model, loadable offline by AutoTokenizer.

transformers' own SentencePiece→fast converter assumes Llama-style normalisation (strip, collapse spaces),
which emo_plugin's lossless tokenizer does not do (identity normalisation, no dummy prefix, byte fallback,
``\\n``/``\\t`` pieces; data/tokenizer.py). So the fast tokenizer is built here from the model proto: the same
BPE (or unigram) vocabulary and merges, spaces → ``▁``, byte fallback, and the Llama decoder. It encodes like
SentencePiece except that special-token text (``<|endoftext|>``, ``<pad>``) written literally in the input is
read as the special token (pass ``split_special_tokens=True`` to get SentencePiece's behaviour exactly).
``tokenizer.model`` is copied alongside for tools that want the SentencePiece model itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from emo_plugin.errors import ConversionError


def bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a piece into two vocabulary pieces, in SentencePiece's merge priority: by the id of the merged
    piece, then shorter left part first, then by the parts' ids. (transformers has such a helper, but it moved
    between 4.57 and 5.x; this runs once per export over the vocabulary.)"""
    ranked = []
    for piece, piece_id in vocab.items():
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        ranked += [((piece_id, len(left), len(right)), left, right) for left, right in splits]
    ranked.sort(key=lambda entry: entry[0])  # stable: ties keep the order by the parts' ids
    return [(left, right) for _, left, right in ranked]


def build_fast_tokenizer(sp_model_path: str | Path):
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(sp_model_path).read_bytes())
    spec = proto.trainer_spec
    if proto.normalizer_spec.add_dummy_prefix or proto.normalizer_spec.remove_extra_whitespaces:
        raise ConversionError(
            f"{sp_model_path}: tokenizer adds a dummy prefix or collapses whitespace; only emo_plugin's lossless "
            "SentencePiece models (data/tokenizer.py) are converted here"
        )
    if spec.model_type == 2:  # BPE: merges in piece order, which is SentencePiece's merge priority
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
        model = models.BPE(vocab, bpe_merges(vocab), unk_token=spec.unk_piece, fuse_unk=True, byte_fallback=True)
    elif spec.model_type == 1:
        model = models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=spec.unk_id, byte_fallback=True)
    else:
        raise ConversionError(f"{sp_model_path}: SentencePiece model type {spec.model_type} is not BPE or unigram")
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_tokens(
        [AddedToken(p.piece, normalized=False, special=p.type == 3) for p in proto.pieces if p.type in (3, 4)]
    )

    def piece(index):
        return proto.pieces[index].piece if index >= 0 else None

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=piece(spec.eos_id),
        pad_token=piece(spec.pad_id),
        unk_token=piece(spec.unk_id),
        bos_token=piece(spec.bos_id),
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def write_tokenizer(sp_model_path: str | Path, folder: str | Path) -> None:
    if not Path(sp_model_path).is_file():
        raise ConversionError(f"tokenizer model {sp_model_path} does not exist; pass --tokenizer")
    build_fast_tokenizer(sp_model_path).save_pretrained(str(folder))
    # transformers 5.x records its internal backend class; name the class both 4.57 and 5.x know instead.
    config_file = Path(folder) / "tokenizer_config.json"
    values = json.loads(config_file.read_text())
    values["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(values, indent=2) + "\n")
    shutil.copyfile(sp_model_path, Path(folder) / "tokenizer.model")
