"""The exported tokenizer loads offline with AutoTokenizer and encodes/decodes like the SentencePiece model."""

import json

import sentencepiece
from transformers import AutoTokenizer

from tests.convert.conftest import TOKENIZER


def test_auto_tokenizer_matches_sentencepiece(hf_folder):
    sp = sentencepiece.SentencePieceProcessor(model_file=TOKENIZER)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    texts = [json.loads(line)["text"] for line in open("examples/data/corpus.jsonl")][:200]
    texts += ["  two leading spaces\n\tand a tab  ", "digits 1234567 ünïcödé 🙂 漢字"]
    texts += ["literal <|endoftext|> text"]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert ids == sp.encode(text), text[:60]
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == sp.eos_id() and tokenizer.pad_token_id == sp.pad_id()
    assert tokenizer.encode("<|endoftext|>", add_special_tokens=False) == [sp.eos_id()]
