"""Text augmentation: EDA (Wei & Zou 2019, "Easy Data Augmentation") on whitespace tokens.

Off by default (`model.text.augment.enabled: false`, `waypost.config.TextAugmentConfig`): it helps small text sets (a few hundred
texts per class) and costs accuracy on large ones. Every function is deterministic given its
random generator or seed.

Synonyms come from WordNet 3.0 (Debian `wordnet-base`), read straight from its data files:
nltk's reader refuses the Debian layout and would be a large dependency for one table.
- Only single-word lemmas are kept: a multi-word lemma (`domestic_dog`) would turn one token into
  several and shift every position the other operations count on.
- Lemmas with a capital letter are proper nouns (`Bush`, `Canis_familiaris`) and are skipped as
  both words and synonyms: lower-cased, they would give "bush" a president for a synonym.
- Only the base forms WordNet lists match ("car", not "cars"); words are looked up lower-cased.
Tokens keep their attached punctuation: in `"Hello,` the word is `Hello`, and `"` and `,` stay.
Layout whitespace (newlines, tabs, runs of spaces) becomes one space in the augmented copies.
"""
from __future__ import annotations

import functools
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from waypost.errors import ConfigError, DataError

WORDNET_DIR = "/usr/share/wordnet"
_POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_LEMMA = re.compile(r"[a-z](?:[a-z'.-]*[a-z])?")  # one lower-case word; hyphens and apostrophes inside
_ADJ_MARKER = re.compile(r"\([a-z]+\)$")  # data.adj marks position: galore(ip), elect(p)
_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)  # leading punctuation, word, trailing punctuation
_END = re.compile(r"[.!?]")
_CLOSING = {"(": ")", "[": "]", "{": "}", "<": ">", "`": "'"}  # other marks close with themselves
# Function words are never replaced: their WordNet senses are rare nouns ("a" -> "angstrom").
STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has have "
    "having he her here hers herself him himself his how i if in into is it its itself just let me more "
    "most my myself no nor not now of off on once only or other our ours ourselves out over own same she "
    "should so some such than that the their theirs them themselves then there these they this those "
    "through to too under until up very was we were what when where which while who whom why will with "
    "would you your yours yourself yourselves".split()
)

__all__ = [
    "STOP_WORDS",
    "WORDNET_DIR",
    "augment_texts",
    "random_delete",
    "random_swap",
    "synonym_replace",
    "synonyms",
    "wordnet_synonyms",
]


def wordnet_synonyms(root: str | os.PathLike[str] = WORDNET_DIR) -> Mapping[str, tuple[str, ...]]:
    """Lower-case word -> sorted single-word synonyms (the other lemmas of every synset holding it).

    Read once per folder and cached (about 0.6 s for WordNet 3.0's 117,659 synsets, 44k words).
    The mapping is read-only and its values are tuples, so no caller can change the cached table.
    """
    return _load_synonyms(str(Path(root)))


@functools.lru_cache(maxsize=4)
def _load_synonyms(root: str) -> Mapping[str, tuple[str, ...]]:
    paths = [Path(root) / name for name in _POS_FILES]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise DataError(
            f"WordNet data files not found: {', '.join(absent)}; install the Debian package "
            "wordnet-base (apt-get install wordnet-base) or pass root= to the folder holding data.noun"
        )
    groups: dict[str, set[str]] = {}
    for path in paths:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.startswith(b"  "):  # licence header
                    continue
                # synset_offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id...] p_cnt ...
                head = line.split(b" ", 4)
                try:
                    count = int(head[3], 16)
                    lemmas = head[4].split(b" ", 2 * count)[: 2 * count : 2]
                except (IndexError, ValueError):
                    raise DataError(f"{path}, line {number}: not a WordNet synset line "
                                    "(offset lex_filenum ss_type w_cnt word lex_id ...)") from None
                words = {w for w in (_ADJ_MARKER.sub("", b.decode("utf-8", "replace")) for b in lemmas)
                         if _LEMMA.fullmatch(w)}
                if len(words) < 2:
                    continue
                for word in words:
                    groups.setdefault(word, set()).update(words)
    return MappingProxyType({w: tuple(sorted(s - {w})) for w, s in groups.items()})


def synonyms(word: str, root: str | os.PathLike[str] = WORDNET_DIR) -> list[str]:
    """Single-word WordNet synonyms of `word` (any case), sorted; [] for an unknown word."""
    return list(wordnet_synonyms(root).get(word.lower(), ()))


def _split(text: str) -> list[list[str]]:
    """Whitespace tokens as [leading punctuation, word, trailing punctuation]; word may be ''."""
    out = []
    for token in text.split():
        match = _TOKEN.match(token)
        out.append(list(match.groups()) if match else ["", token, ""])
    return out


def _join(tokens: list[list[str]]) -> str:
    return " ".join("".join(t) for t in tokens if "".join(t))


def _words(tokens: list[list[str]]) -> list[int]:
    """Positions of tokens that hold a word (letters or digits), not bare punctuation like `--`."""
    return [i for i, t in enumerate(tokens) if any(c.isalnum() for c in t[1])]


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def synonym_replace(text: str, n: int, rng: random.Random, *, root: str | os.PathLike[str] = WORDNET_DIR) -> str:
    """Replace up to `n` distinct non-stop words that have WordNet synonyms with a random one each,
    keeping their punctuation and capitalisation."""
    table = wordnet_synonyms(root)
    tokens = _split(text)
    candidates = [i for i in _words(tokens)
                  if tokens[i][1].lower() not in STOP_WORDS and tokens[i][1].lower() in table]
    rng.shuffle(candidates)
    for i in candidates[: max(n, 0)]:
        word = tokens[i][1]
        tokens[i][1] = _match_case(rng.choice(table[word.lower()]), word)
    return _join(tokens)


def random_delete(text: str, p: float, rng: random.Random) -> str:
    """Drop each word with probability `p`. Its trailing punctuation moves to the previous kept
    token unless that one has its own ("I like cats." -> "I like."), its leading punctuation to the
    next ("say "hello there"" -> "say "there""); a word wrapped in a pair ("(this)") goes with it.
    One word always survives, so the result is never empty."""
    tokens = _split(text)
    words = _words(tokens)
    if len(words) <= 1 or p <= 0:
        return _join(tokens)
    drop = {i for i in words if rng.random() < p}
    if len(drop) == len(words):
        drop.discard(rng.choice(words))
    kept: list[list[str]] = []
    carry = ""  # leading punctuation of dropped words, for the next kept token
    for i, token in enumerate(tokens):
        if i in drop:
            if any(_CLOSING.get(c, c) in token[2] for c in token[0]):
                continue  # a wrapped word, "(this)" or '"yes!"': its marks go with it
            carry += token[0]
            if kept and not kept[-1][2]:
                kept[-1][2] = token[2]
            elif kept and not _END.search(kept[-1][2]):  # keep a sentence end: "(this) fine!" -> "(this)!"
                kept[-1][2] += "".join(_END.findall(token[2]))
            continue
        kept.append([carry + token[0], token[1], token[2]])
        carry = ""
    return _join(kept)  # an opening mark with no word after it is dropped


def random_swap(text: str, n: int, rng: random.Random) -> str:
    """Swap two random words `n` times; punctuation stays in place ("Hi, you." -> "you, Hi.").

    Words move as they are, capitals included: re-casing would lower-case names as well."""
    tokens = _split(text)
    words = _words(tokens)
    if len(words) < 2:
        return _join(tokens)
    for _ in range(max(n, 0)):
        i, j = rng.sample(words, 2)
        tokens[i][1], tokens[j][1] = tokens[j][1], tokens[i][1]
    return _join(tokens)


def augment_texts(
    texts: list[str],
    *,
    n_aug: int = 1,
    synonym: float = 0.1,
    delete: float = 0.1,
    swap: float = 0.1,
    seed: int = 0,
    root: str | os.PathLike[str] = WORDNET_DIR,
) -> list[str]:
    """`n_aug` new texts per input (only the new ones, input order, copies of a text together).

    As in EDA, each copy gets one operation drawn among those with a rate > 0: synonym
    replacement and swap touch max(1, rate x words) words, deletion drops each word with
    probability `delete`. If the drawn operation cannot change the text (one word, no synonym),
    the others are tried; a text nothing can change (a lone word without synonyms) is returned as
    is. One `random.Random(seed)` drives the whole list, so the same call gives the same texts.
    """
    _check_rates(n_aug, synonym, delete, swap)
    rng = random.Random(seed)
    ops = [op for op, rate in (("synonym", synonym), ("delete", delete), ("swap", swap)) if rate > 0]
    out: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"texts[{index}] is {text!r}; augmentation needs non-empty strings")
        n_words = len(text.split())
        for _ in range(n_aug):
            order = rng.sample(ops, len(ops))
            new = text
            for op in order:
                if op == "synonym":
                    new = synonym_replace(text, max(1, int(synonym * n_words)), rng, root=root)
                elif op == "delete":
                    new = random_delete(text, delete, rng)
                else:
                    new = random_swap(text, max(1, int(swap * n_words)), rng)
                if new != " ".join(text.split()):
                    break
            out.append(new)
    return out


def _check_rates(n_aug: int, synonym: float, delete: float, swap: float) -> None:
    if not isinstance(n_aug, int) or n_aug < 0:
        raise ConfigError(f"text augmentation n_aug must be an integer >= 0, got {n_aug!r}")
    for name, rate in (("synonym", synonym), ("delete", delete), ("swap", swap)):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"text augmentation {name} must be between 0 and 1, got {rate!r}")
    if n_aug and synonym == delete == swap == 0:
        raise ConfigError("text augmentation needs one of synonym, delete, swap > 0 (all are 0)")
