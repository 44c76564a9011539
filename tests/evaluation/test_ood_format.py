"""Out-of-domain text in WikiText's conventions (`--ood-format`), and bits per byte over the scored tokens."""

import math

import pytest
import torch

from Code.evaluation.ood_format import is_hard_wrapped, to_conventions, to_wikitext, wikitext_line

# A hard-wrapped paragraph as Project Gutenberg prints one (~70 columns), then a second, short one.
GUTENBERG_PARAGRAPHS = """\
"Well, Mr. Knightley," said Emma, "it's a twenty-one-year-old
habit; I paid 1,000 pounds--or 2.5 per cent.--for
it, and _you_ don't (Mr. H. H. Weston's words) ... mind."


Second paragraph
  here.
"""

# written by hand from the rules: one paragraph per line framed by spaces, blank lines gone, punctuation
# spaced, @-@ between word characters, @,@ / @.@ between digits, clitics split, abbreviations and
# initials whole, Gutenberg's "--" an em dash and its _italics_ plain
GUTENBERG_EXPECTED = (
    ' " Well , Mr. Knightley , " said Emma , " it \'s a twenty @-@ one @-@ year @-@ old habit ; I paid 1 @,@ 000 '
    "pounds \u2014 or 2 @.@ 5 per cent . \u2014 for it , and you don 't ( Mr. H. H. Weston 's words ) ... mind . \" \n"
    " Second paragraph here . \n"
)

# WikiText-2 lines as the corpus has them (headings, blank lines, every rule's output already in place)
WIKITEXT = (
    " \n = Valkyria Chronicles III = \n \n"
    " Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場のヴァルキュリア3 , lit . Valkyria of the"
    " Battlefield 3 ) , commonly referred to as Valkyria Chronicles III outside Japan , is a tactical"
    " role @-@ playing video game developed by Sega and Media.Vision for the PlayStation Portable ."
    " It sold 1 @,@ 500 copies at $ 4 @.@ 99 , 48 @.@ 2 % of the U.S. market ; \" I don 't know \" ,"
    " said Mr. C. W. Faulkner 's son – the game 's composer . \n"
    " \n = = Gameplay = = \n \n"
)


def test_hard_wrapped_gutenberg_paragraph_by_hand():
    assert is_hard_wrapped(GUTENBERG_PARAGRAPHS.split("\n"))
    assert to_wikitext(GUTENBERG_PARAGRAPHS) == GUTENBERG_EXPECTED
    assert to_wikitext(GUTENBERG_EXPECTED) == GUTENBERG_EXPECTED  # idempotent
    assert to_conventions(GUTENBERG_PARAGRAPHS, "raw") == GUTENBERG_PARAGRAPHS
    with pytest.raises(ValueError, match="wikitext, raw"):
        to_conventions("x", "moses")


def test_unknown_format_is_one_error_line(tmp_path, capsys):
    from Code.evaluate_ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--ckpt", str(tmp_path), "--ood-text", str(tmp_path), "--ood-format", "moses"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exit_.value.code == 2 and len(err) == 1 and "--ood-format" in err[0] and "wikitext" in err[0], err


def test_wikitext_comes_back_unchanged():
    assert not is_hard_wrapped(WIKITEXT.split("\n"))
    assert to_wikitext(WIKITEXT) == WIKITEXT
    assert wikitext_line("Mr. Smith's dogs' bones.") == "Mr. Smith 's dogs ' bones ."


def test_wikitext_corpus_is_nearly_a_fixed_point(corpus_dir):
    """The whole test split of WikiText-2: at most a handful of lines change (its rare unspaced '--', 1,000th,
    pp.), none are merged or split, and a second pass changes nothing."""
    text = (corpus_dir / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    once = to_wikitext(text)
    before, after = text.split("\n"), once.split("\n")
    assert len(before) == len(after)
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert changed <= 0.002 * len(before), changed
    assert to_wikitext(once) == once


def test_gutenberg_books_lose_their_wrapping(corpus_dir):
    """A real book: hard-wrapped as read, one paragraph per line (no blank lines) once in WikiText's layout."""
    from Code.evaluation.texts import read_texts

    book = corpus_dir / "gutenberg" / "austen-emma.txt"
    if not book.is_file():
        pytest.skip("no gutenberg/ in the offline corpus")
    (raw,) = read_texts([book], "--ood-text")
    (wiki,) = read_texts([book], "--ood-text", "wikitext")
    assert raw.conventions == "raw" and wiki.conventions == "wikitext"
    assert is_hard_wrapped(raw.text.split("\n")) and not is_hard_wrapped(wiki.text.split("\n"))
    assert raw.text.count("\n") > 2.5 * wiki.text.count("\n")
    assert " \n \n" not in wiki.text and " Emma Woodhouse , handsome , clever , and rich , " in wiki.text


class _CharTokenizer:
    """One character per id; id 0 is the end-of-text token, decoded to nothing like a special token."""

    chars = ["<eot>", "a", "é", " ", "€"]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.chars[i] for i in ids if not (skip_special_tokens and i == 0))


@pytest.mark.parametrize("stride", [None, 3, 7])
def test_scored_bytes_are_the_scored_tokens_bytes(stride):
    """Sliding windows or not, the bytes are those of every token after the first (what the windows score)."""
    import numpy as np

    from Code.evaluation.lm import _items, add_bpb, scored_bytes

    tokens = np.array([2, 1, 0, 4, 3, 2, 2, 1, 0, 1, 4, 4, 3, 1, 2, 0, 3, 4, 1, 1, 2], dtype=np.int64)
    items = _items(tokens, 8, stride)
    tok = _CharTokenizer()
    expected = len(tok.decode(tokens[1:].tolist(), skip_special_tokens=True).encode("utf-8"))
    assert scored_bytes(items, tok) == expected
    labels = torch.cat([it["labels"][1:] for it in items])
    assert int((labels != -100).sum()) == len(tokens) - 1  # each token after the first scored once
    assert scored_bytes(items, None) is None
    scored = {"ppl": math.e, "nll": 1.0, "tokens": 20}
    assert add_bpb(scored, 40)["bpb"] == pytest.approx(20 / (40 * math.log(2)))
    assert add_bpb(scored, None)["bpb"] is None
