"""Turning document texts into the token ids the model was trained on.

The tokenizer is the checkpoint's own (its `tokenizer.json`, read as a fast tokenizer) or a SentencePiece model
file (emo_plugin's own tokenizers, `tools/train_tokenizer.py`). Every document ends with the model's eos token
because EMO documents are eos-delimited: the eos token belongs to the document it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emo_plugin.errors import AnalysisError

TextEncoder = Callable[[str], list[int]]


def load_text_encoder(checkpoint_dir: str | Path, tokenizer_path: str | Path | None = None) -> TextEncoder:
    """Text → token ids, without special tokens.

    `tokenizer_path` may be a SentencePiece `.model` file or a Hugging Face tokenizer directory; by default the
    checkpoint directory's Hugging Face tokenizer is used, or else its `tokenizer.model` (SentencePiece).
    """
    if tokenizer_path is not None:
        path = Path(tokenizer_path)
        if path.is_file():
            return _sentencepiece_encoder(path)
        if path.is_dir():
            return _auto_tokenizer_encoder(path)
        raise AnalysisError(
            f"{path}: tokenizer does not exist (expected a SentencePiece .model file or a tokenizer directory)"
        )
    checkpoint_dir = Path(checkpoint_dir)
    if any((checkpoint_dir / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        return _auto_tokenizer_encoder(checkpoint_dir)
    if (checkpoint_dir / "tokenizer.model").is_file():
        return _sentencepiece_encoder(checkpoint_dir / "tokenizer.model")
    raise AnalysisError(
        f"{checkpoint_dir}: no tokenizer in the checkpoint (no tokenizer_config.json, tokenizer.json or "
        "tokenizer.model); pass --tokenizer with a SentencePiece .model file or a tokenizer directory"
    )


def _sentencepiece_encoder(model_file: Path) -> TextEncoder:
    import sentencepiece

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    except (OSError, RuntimeError) as error:
        raise AnalysisError(f"{model_file}: not a SentencePiece model ({error})") from None
    return lambda text: processor.encode(text)


def _auto_tokenizer_encoder(directory: Path) -> TextEncoder:
    from transformers import PreTrainedTokenizerFast

    # The fast-tokenizer class reads tokenizer.json directly: AutoTokenizer would also load the model config,
    # which names remote code (auto_map) and makes transformers 5 prompt about running it.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def encode_documents(
    texts: list[str],
    encode: TextEncoder,
    eos_token_id: int,
    vocab_size: int,
    max_doc_tokens: int,
    token_budget: int | None = None,
) -> list[list[int]]:
    """Token ids of the texts, in order, each ending with eos and cut to `max_doc_tokens`.

    Stops once `token_budget` tokens are collected (the last document is cut to fit), so every domain
    contributes a comparable amount of text. Texts that encode to nothing are skipped: a lone eos token tells
    nothing about a domain.
    """
    if max_doc_tokens < 2:
        raise AnalysisError(f"--max-doc-tokens must be >= 2, got {max_doc_tokens}")
    documents, total = [], 0
    for text in texts:
        remaining = max_doc_tokens if token_budget is None else min(max_doc_tokens, token_budget - total)
        if remaining < 2:
            break
        token_ids = list(encode(text))
        if not token_ids:
            continue
        token_ids = (token_ids + [eos_token_id])[:remaining]
        too_large = max(token_ids)
        if too_large >= vocab_size:
            raise AnalysisError(
                f"tokenizer produced id {too_large} but the model's vocab_size is {vocab_size}: "
                "the tokenizer does not belong to this checkpoint (pass the right --tokenizer)"
            )
        documents.append(token_ids)
        total += len(token_ids)
    return documents
