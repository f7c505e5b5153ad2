"""A word-level tokenizer for the toy world, saved as a plain `CLIPTokenizer` (vocab.json + merges.txt).

ovi loads tokenizers with `CLIPTokenizer.from_pretrained`, a byte-level BPE. A BPE whose merges
were learnt until every word of the toy vocabulary is one symbol *is* a word-level tokenizer for
those words: applying the learnt merges in rank order reproduces the training segmentation, so
each known word becomes exactly one token. Unknown words fall back to single characters
(lowercase letters are in the vocabulary); anything else maps to the unknown token.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ovi_plugins.toy.dataset import COLOURS, POSITIONS, SHAPES, SIZES

EOW = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 16
EXTRA_WORDS = ("a", "an", "the", "and", "on", "of", "in", "with", "picture", "photo", "image", "shape",
               "big", "tiny", "middle", "center", "next", "to", "two", "one")


def toy_words() -> list[str]:
    words = list(COLOURS) + list(SHAPES) + list(SIZES) + list(POSITIONS) + list(EXTRA_WORDS)
    words += [s + "s" for s in SHAPES]
    return sorted(set(words))


def unknown_words(prompts: list[str]) -> list[str]:
    """Words of `prompts` outside the toy vocabulary, in order of appearance, each once.

    Lower-cased and split on white space and punctuation, as the CLIP tokenizer does; a word with
    anything but ASCII letters (accents, emoji, digits) is unknown too.
    """
    known = set(toy_words())
    out: list[str] = []
    for prompt in prompts:
        for word in re.findall(r"[^\s!-/:-@\[-`{-~]+", prompt.lower()):
            if word not in known and word not in out:
                out.append(word)
    return out


def vocabulary_summary() -> str:
    """The toy vocabulary in one line, for messages."""
    return (f"colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; sizes {', '.join(SIZES)}; "
            f"positions {', '.join(POSITIONS)}")


def learn_word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) after which every word in `words` is one symbol.

    Each round merges the most frequent adjacent pair (ties: the lexicographically smallest), the
    standard BPE training rule, until no word has two symbols left. Deterministic.
    """
    segs = {w: [*w[:-1], w[-1] + EOW] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for seg in segs.values():
            for a, b in zip(seg, seg[1:]):
                counts[(a, b)] += 1
        if not counts:
            return merges
        top = max(counts.values())
        pair = min(p for p, c in counts.items() if c == top)
        merges.append(pair)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == pair:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = out


def write_tokenizer(folder: Path, words: list[str] | None = None, max_length: int = MAX_LENGTH) -> Path:
    """Write a CLIPTokenizer folder whose known words are single tokens; returns the folder."""
    from transformers import CLIPTokenizer

    words = sorted(set(words or toy_words()))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_word_merges(words)
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    letters = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz"))
    for c in letters:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + EOW, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)
    return folder
