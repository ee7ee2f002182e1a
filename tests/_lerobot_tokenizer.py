"""A real Hugging Face tokenizer folder that tokenizes exactly as the LeRobot fixtures' byte-level
stand-in (README "Tokenization": ``ids = [2] + [3 + b for b in text.encode('utf-8')]``, pad id 0),
built with the ``tokenizers`` library: a BPE without merges over GPT-2's byte alphabet (one token
per UTF-8 byte, id 3 + byte), ``<s>`` (id 2) prepended by the post-processor, ``<pad>`` id 0. Saved
with ``PreTrainedTokenizerFast.save_pretrained``, it loads through
``AutoTokenizer.from_pretrained(folder, local_files_only=True)``: the path real tokenizers take."""

from __future__ import annotations

from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel pre-tokenizes to)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def write_byte_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = _bytes_to_unicode()
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, **{chars[b]: 3 + b for b in range(256)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", unk_token="<unk>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder
