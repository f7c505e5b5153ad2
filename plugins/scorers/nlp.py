"""Noun phrases and parts of speech for the scorers, as the official scripts get them from spaCy.

The official T2I-CompBench scripts parse prompts with spaCy's `en_core_web_sm`:
- BLIP-VQA asks one question per `doc.noun_chunks` (minus 'top', 'the side', 'the left', 'the right');
- 2D spatial takes the first and last `NOUN` token (or, for complex prompts, the nouns around a
  preposition, `NOUN`/`PROPN`);
- CLIPScore on complex prompts drops the `ADJ` tokens.

`get_parser("auto")` uses spaCy when it and `en_core_web_sm` are installed (then the numbers match
the official scripts' parsing), and otherwise `RuleParser`: a small, documented rule-based tagger
and chunker for the short English descriptions of T2I-CompBench. It knows function words
(determiners, prepositions, conjunctions, pronouns, auxiliaries) from word lists, adjectives from
a lexicon of colours, shapes, materials and common adjectives plus suffixes, and calls every other
word a noun; a noun chunk is a maximal run of determiners, numbers, adjectives and nouns that ends
in a noun. It agrees with spaCy on simple prompts and can differ on complex sentences, so the
parser's name is part of each scorer's settings (stored with the scores and shown in scores.json).

Light: pure Python; spaCy is imported only when asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Protocol

from ovi_cli.bench.score import NLP_CHOICES as PARSERS
from ovi_cli.errors import OviError

SPACY_MODEL = "en_core_web_sm"


@dataclass(frozen=True)
class Token:
    text: str
    pos: str  # universal POS tag: NOUN, PROPN, ADJ, VERB, DET, ADP, NUM, PRON, CCONJ, PUNCT, ...
    start: int  # character offsets in the text
    end: int


class Parser(Protocol):
    name: str

    def tokens(self, text: str) -> list[Token]: ...

    def noun_chunks(self, text: str) -> list[str]: ...


# ---- spaCy ---------------------------------------------------------------------------------------
class SpacyParser:
    """spaCy's `en_core_web_sm`, as the official scripts use it."""

    def __init__(self) -> None:
        import spacy

        self.nlp = spacy.load(SPACY_MODEL)
        self.name = f"spacy {spacy.__version__} {SPACY_MODEL} {self.nlp.meta.get('version', '?')}"

    @lru_cache(maxsize=4096)  # noqa: B019 - one parser per process, prompts repeat K times
    def _doc(self, text: str):
        return self.nlp(text)

    def tokens(self, text: str) -> list[Token]:
        return [Token(t.text, t.pos_, t.idx, t.idx + len(t.text)) for t in self._doc(text)]

    def noun_chunks(self, text: str) -> list[str]:
        return [c.text for c in self._doc(text).noun_chunks]


# ---- the rule-based fallback ---------------------------------------------------------------------
DETERMINERS = frozenset(
    "a an the this these those some any each every another no both either neither all several many few".split())
POSSESSIVES = frozenset("my your his her its our their".split())
NUMBERS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve twenty hundred dozen".split())
PREPOSITIONS = frozenset("""
    about above across after against along amid amidst among around at atop before behind below beneath beside
    besides between beyond by down during except for from in inside into like near of off on onto out outside over
    past through throughout to toward towards under underneath until up upon via with within without than
""".split())
CONJUNCTIONS = frozenset("and or but nor yet so".split())
SUBORDINATORS = frozenset(
    "while as because when where whereas if although though since that which who whom whose whilst".split())
PRONOUNS = frozenset("""
    i me you he him she it we us they them someone somebody something everyone everybody everything nothing
    anyone anything itself himself herself themselves myself yourself ourselves
""".split())
AUXILIARIES = frozenset("is are was were be been being am has have had do does did can could will would shall "
                        "should may might must".split())
ADVERBS = frozenset("""
    very too quite also just together there here away back still always never often even really almost alone only
    again then now already rather nearby not softly gently slowly quickly brightly
""".split())
VERBS = frozenset("""
    sit sits sat stand stands stood hold holds held look looks lie lies lay rest rests hang hangs hung run runs ran
    walk walks play plays eat eats ate fly flies flew drink drinks drank read reads write writes wrote wear wears wore
    carry carries ride rides rode jump jumps swim swims sleep sleeps chase chases watch watches wait waits sing sings
    dance dances cook cooks paint paints take takes took make makes made give gives gave use uses lean leans float
    floats grow grows shine shines cover covers surround surrounds contain contains placed put puts sip sips
    feed feeds pet pets kick kicks throw throws catch catches climb climbs stare stares smile smiles laugh laughs
    listen listens talk talks speak speaks open opens close closes pour pours cut cuts fill fills lit lights blow
    blows bake bakes wash washes clean cleans fix fixes push pushes pull pulls reach reaches touch touches hug hugs
    kiss kisses glow glows sparkle sparkles reflect reflects perch perches sat seems seem appear appears
""".split())
ADJECTIVES = frozenset("""
    red green blue yellow white black brown pink purple gray grey golden beige violet cyan
    magenta turquoise maroon navy crimson scarlet teal ivory olive lavender bronze copper dark bright pale
    round square oblong spherical cubic rectangular pentagonal hexagonal octagonal circular
    cylindrical conical flat curved pointed teardrop angular rounded
    wooden metallic plastic fluffy furry soft hard smooth rough shiny glossy transparent
    big small large tiny huge little tall short long wide narrow thick thin heavy old new young ancient modern
    cute beautiful pretty ugly happy sad angry hot cold warm cool wet dry clean dirty empty full fresh ripe
    delicious sweet sour tasty fat slim fast slow loud quiet quick elegant vintage rustic cozy fancy sleek
    fuzzy bumpy sharp striped spotted colorful colourful sturdy fragile delicate vibrant
    translucent opaque sunny rainy cloudy snowy windy foggy stormy sandy rocky grassy leafy muddy
    dusty rusty hairy curly wavy creamy juicy crunchy cheesy chubby busy lazy sleepy dreamy messy tidy shaggy
    glittery sparkly natural jagged intricate crisp gentle fragrant bold perfect textured tired comfortable
    stunning high dull prickly rich calm polished romantic soothing whitish stainless favorite floral electronic
    unique different rugged thorny dim graceful icy grand early peaceful lush streamlined endless artistic plush
    timeless dramatic scenic special remote visible blank celestial magic precious beloved useful fashionable
    picturesque necessary lumpy compact bulky other same
""".split())
ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "ical", "able", "ible", "less", "ish", "en", "-shaped")
NOT_ADJECTIVES = frozenset("""
    kitten chicken garden oven screen children women men linen curtain mountain fountain kitchen button cotton
    lemon melon ribbon balloon spoon moon wagon dragon pen hen den queen teen citizen token heaven raven siren
    horn olive dive hive drive knife wife fish dish cabinet table cable vegetable apple bottle candle
    bible fable stable eagle
""".split())
SPATIAL_NOUNS = frozenset("top bottom left right side front back middle center centre".split())
_TOKEN = re.compile(r"'s\b|[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def split_tokens(text: str) -> list[tuple[str, int, int]]:
    """Words, numbers and single punctuation marks (`-` and `'s` are tokens of their own, as in spaCy)."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _adjective_like(word: str) -> bool:
    w = word.lower()
    if w in NOT_ADJECTIVES:
        return False
    return w in ADJECTIVES or (len(w) > 4 and w.endswith(ADJECTIVE_SUFFIXES))


NOT_ADVERBS = frozenset("""
    family butterfly fly jelly belly lily bully ally rally assembly supply anomaly monopoly dragonfly firefly italy
    holly tally reply july
""".split())
# adjectives that are also nouns: the head of a phrase when they end it ("a glass", "a square")
NOUN_ADJECTIVES = frozenset("""
    square diamond glass plastic paper stone marble brick iron steel gold silver copper bronze rubber leather wool
    silk velvet cotton fabric concrete ceramic orange teardrop light oval
""".split())
_MODIFIER_CONTEXT = ("DET", "POSS", "NUM", "ADJ")


def _word_class(word: str, prev: str | None, first: bool) -> str:
    """A tag from the word lists and the previous tag."""
    w = word.lower()
    if w == "'s":
        return "PART"
    if not re.match(r"[A-Za-z0-9]", word):
        return "PUNCT"
    if w.isdigit() or w in NUMBERS:
        return "NUM"
    if w == "next":  # spaCy: "was next to" ADJ, "lay next to" ADV
        return "ADJ" if prev == "AUX" else "ADV"
    for tag, words in (("DET", DETERMINERS), ("POSS", POSSESSIVES), ("CCONJ", CONJUNCTIONS),
                       ("SCONJ", SUBORDINATORS), ("PRON", PRONOUNS), ("AUX", AUXILIARIES), ("ADP", PREPOSITIONS)):
        if w in words:
            return tag
    if w in ADVERBS or (w.endswith("ly") and len(w) > 4 and w not in NOT_ADVERBS):
        return "ADV"
    in_phrase = prev in _MODIFIER_CONTEXT
    if not in_phrase and (w in VERBS or (len(w) > 4 and w.endswith(("ing", "ed")))):
        return "VERB"
    if prev == "NOUN" and len(w) > 4 and w.endswith("en") and w not in ADJECTIVES | NOT_ADJECTIVES:
        return "VERB"  # "a frog hidden by a bicycle"
    if w.endswith("ing") and len(w) > 4:
        return "VERB-MOD"  # a participle inside a noun phrase ("a sleeping cat"), or its head ("a painting")
    if _adjective_like(word) or (in_phrase and w.endswith("ed") and len(w) > 4):
        return "ADJ"
    if word[:1].isupper() and not first:
        return "PROPN"
    return "NOUN"


_CHUNK_PARTS = ("DET", "POSS", "NUM", "ADJ", "NOUN", "PROPN", "VERB-MOD", "PART")


def _is_head(word: str, tag: str) -> bool:
    """Can this word, ending a run of phrase words, be the phrase's head noun?"""
    if tag in ("NOUN", "PROPN", "VERB-MOD"):
        return True
    w = word.lower()
    return tag == "ADJ" and w != "next" and (w in NOUN_ADJECTIVES or w not in ADJECTIVES)


class RuleParser:
    """The documented fallback when spaCy is not installed (see the module docstring)."""

    name = "rules v1"

    def _tagged(self, text: str) -> list[list]:
        out: list[list] = []
        prev: str | None = None
        for k, (word, start, end) in enumerate(split_tokens(text)):
            hyphened = bool(out) and out[-1][0] == "-" and out[-1][3] == start and len(out) > 1 \
                and out[-2][3] == out[-1][2]
            tag = _word_class(word, "ADJ" if hyphened else prev, first=(k == 0))  # "cube-shaped": one word
            out.append([word, tag, start, end])
            if tag != "PUNCT":
                prev = tag
        for i, t in enumerate(out[:-1]):  # "the silver watch was ...": a listed verb before an auxiliary is a noun
            if t[1] == "VERB" and t[0].lower() in VERBS and out[i + 1][1] == "AUX":
                t[1] = "NOUN"
        for i, t in enumerate(out):  # "her" before a phrase word is a possessive, else the pronoun
            if t[0].lower() == "her":
                nxt = out[i + 1][1] if i + 1 < len(out) else None
                t[1] = "POSS" if nxt in ("ADJ", "NOUN", "PROPN", "NUM", "VERB-MOD") else "PRON"
        return out

    def _run_end(self, toks: list[list], i: int) -> int:
        """The end of the run of phrase words that starts at `i` (a new determiner starts a new run)."""
        j = i
        while j < len(toks):
            tag = toks[j][1]
            if tag in _CHUNK_PARTS and not (tag in ("DET", "POSS") and j > i and toks[j - 1][1] != "PART"):
                j += 1
            elif (toks[j][0] == "-" and i < j < len(toks) - 1 and toks[j][2] == toks[j - 1][3]
                  and toks[j + 1][2] == toks[j][3]):
                j += 1  # an infix hyphen: "cube-shaped", "T-shirt"
            elif (toks[j][0] == "," and i < j < len(toks) - 1 and toks[j - 1][1] == "ADJ"
                  and toks[j + 1][1] in ("ADJ", "VERB-MOD")):
                j += 1  # a comma between adjectives: "a long, narrow kitchen"
            else:
                break
        return j

    def _chunks(self, text: str) -> tuple[list[list], list[tuple[int, int]]]:
        """Tagged tokens (adjectives and nouns resolved) and the token spans of the noun chunks."""
        toks = self._tagged(text)
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(toks):
            tag = toks[i][1]
            if tag == "PRON":
                spans.append((i, i + 1))  # spaCy counts a pronoun as a noun chunk of its own
                i += 1
                continue
            if tag not in _CHUNK_PARTS or tag == "PART":
                i += 1
                continue
            j = self._run_end(toks, i)
            # the head: the last word of the run that can be a noun; a run without one is no chunk
            # ("is blue"); other words of the run keep their tags (adjectives) or are nouns (compounds)
            head = next((k for k in range(j - 1, i - 1, -1) if _is_head(toks[k][0], toks[k][1])), None)
            if head is not None:
                toks[head][1] = "PROPN" if toks[head][1] == "PROPN" else "NOUN"
                spans.append((i, head + 1))
            i = j
        for t in toks:
            t[1] = {"POSS": "PRON", "VERB-MOD": "VERB"}.get(t[1], t[1])
        return toks, spans

    def tokens(self, text: str) -> list[Token]:
        toks, _ = self._chunks(text)
        return [Token(w, tag, s, e) for w, tag, s, e in toks]

    def noun_chunks(self, text: str) -> list[str]:
        toks, spans = self._chunks(text)
        return [text[toks[a][2]:toks[b - 1][3]] for a, b in spans]


@cache
def _spacy() -> SpacyParser | None:
    try:
        return SpacyParser()
    except (ImportError, OSError):
        return None


def get_parser(kind: str = "auto") -> Parser:
    """`spacy` (required), `rules`, or `auto` (spaCy with en_core_web_sm where installed, else rules)."""
    if kind not in PARSERS:
        raise OviError(f"--nlp must be one of {', '.join(PARSERS)} (got {kind!r})")
    if kind == "rules":
        return RuleParser()
    parser = _spacy()
    if parser is not None:
        return parser
    if kind == "spacy":
        raise OviError(f"--nlp spacy: spaCy with {SPACY_MODEL} is not installed here "
                       f"(pip install spacy && python -m spacy download {SPACY_MODEL}), or use --nlp rules")
    return RuleParser()
