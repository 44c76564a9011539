"""Out-of-domain text put into the teacher's training conventions (`--ood-format wikitext`), so that an
out-of-domain perplexity measures the domain and not the layout.

WikiText (the study's corpus) is one paragraph per line, each line framed by one space (" text \\n"), with
the spacing of the Moses tokenizer as WikiText-103 applied it: punctuation a token of its own (" , " " . "
" ( "), `@-@` for a hyphen between word characters, `@,@` / `@.@` between digits, clitics split off their
word (`game 's`, `don 't`, `I 'm`), abbreviations and initials kept whole (`Mr.`, `U.S.`, `H. H.`).
Project Gutenberg books are hard-wrapped at ~70 columns with blank lines between paragraphs; scored raw,
their newline tokens alone are 6.7% of the tokens and 13% of the loss.

The rules are a few regular expressions rather than sacremoses: Moses re-splits text that is already
tokenized (`'s` -> `' s`, `@-@` -> `@ - @`, `<unk>` -> `< unk >`), and the self-check (in-domain test text
through this path) needs WikiText to come back unchanged. `to_wikitext` is idempotent.
"""

from __future__ import annotations

import re

FORMATS = ("wikitext", "raw")  # --ood-format choices; raw: the text as read (Gutenberg header/footer cut)

# A text is hard-wrapped when (almost) no line is longer than a printed page's: WikiText's paragraph lines
# run to hundreds of characters, a Gutenberg book's to ~75.
WRAP_COLUMNS = 100
WRAP_LONG_SHARE = 0.02  # at most this share of non-blank lines over WRAP_COLUMNS: wrapped

# Moses' English non-breaking prefixes that occur in prose: "Mr." stays one token (and so do initials
# "H." and anything with an inner dot, "U.S.", checked in _split_period).
ABBREVIATIONS = frozenset("Mr Mrs Ms Dr St Jr Sr Mt No Nos Prof Rev Gen Col Capt Lt Sgt Gov Hon Co Inc Ltd Bros "
                          "vs Vol Fig Ft Messrs Esq al".split())

_EMPHASIS = re.compile(r"(?<!\w)_(\S(?:[^_\n]*?\S)?)_(?!\w)")   # Gutenberg's _italics_
_DOUBLE_DASH = re.compile(r"\s*-{2,}\s*")                       # Gutenberg's "--" dash
_NUMBER_SEP = re.compile(r"(?<=\d)([,.])(?=\d)")                 # 1,000 -> 1 @,@ 000; 4.5 -> 4 @.@ 5
_WORD_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")                     # role-playing -> role @-@ playing
# punctuation that is always its own token, except inside an @x@ marker (matched first and kept)
_PUNCT = re.compile(r"(@[-,.]@)|([,;:!?\"()\[\]{}$%&/*+#=~|\u2013\u2014\u2026])")
_CLITIC = re.compile(r"(?<=[^\W\d_])'(s|t|re|ve|ll|d|m)\b", re.I)  # game's -> game 's, don't -> don 't
_CLOSING_QUOTE = re.compile(r"(?<=\S)'(?![^\W\d_])")            # dogs' / 'word' -> dogs ' / 'word '
_SPACES = re.compile(r"\s+")


def _space_punct(match: re.Match) -> str:
    return match.group(1) or f" {match.group(2)} "


def _split_period(token: str) -> str:
    """A token's final period as a token of its own, unless it ends an abbreviation or an initial."""
    if len(token) < 2 or not token.endswith("."):
        return token
    stem = token.rstrip(".")
    if len(token) - len(stem) > 1:  # an ellipsis "word..." -> "word ..."
        return f"{stem} {token[len(stem):]}" if stem else token
    if "." in stem or stem in ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()) or "@" in stem:
        return token
    return f"{stem} ."


def wikitext_line(text: str) -> str:
    """One paragraph in WikiText's spacing (without the framing spaces); idempotent."""
    text = _EMPHASIS.sub(r"\1", text)
    text = _DOUBLE_DASH.sub(" \u2014 ", text)
    text = _NUMBER_SEP.sub(r" @\1@ ", text)
    text = _WORD_HYPHEN.sub(" @-@ ", text)
    text = _PUNCT.sub(_space_punct, text)
    text = _CLITIC.sub(r" '\1", text)
    text = _CLOSING_QUOTE.sub(" ' ", text)
    return " ".join(_split_period(tok) for tok in _SPACES.split(text.strip()) if tok)


def is_hard_wrapped(lines: list[str]) -> bool:
    """Whether paragraphs span several lines (a printed book) rather than one line each (WikiText)."""
    filled = [line for line in lines if line.strip()]
    long = sum(len(line.strip()) > WRAP_COLUMNS for line in filled)
    return bool(filled) and long <= WRAP_LONG_SHARE * len(filled)


def paragraphs(text: str) -> list[str]:
    """The text's paragraphs, in order: a hard-wrapped text's blank-line-separated blocks, each joined into
    one line; else its lines as they are, blank ones included (WikiText's blank lines around headings)."""
    lines = text.split("\n")
    if is_hard_wrapped(lines):
        out: list[str] = []
        block: list[str] = []
        for line in [*lines, ""]:
            if line.strip():
                block.append(line.strip())
            elif block:
                out.append(" ".join(block))
                block = []
        return out
    out = [line.strip() for line in lines]
    return out[:-1] if out and not out[-1] else out  # the final newline ends a line, it opens none


def to_wikitext(text: str) -> str:
    """Text in WikiText's layout and spacing: one paragraph per line, each " paragraph \\n"."""
    return "".join(f" {wikitext_line(p)} \n" if p else " \n" for p in paragraphs(text))


def to_conventions(text: str, conventions: str) -> str:
    """`text` in the named conventions (FORMATS)."""
    if conventions == "raw":
        return text
    if conventions == "wikitext":
        return to_wikitext(text)
    raise ValueError(f"unknown out-of-domain format {conventions!r}: use one of {', '.join(FORMATS)}")
