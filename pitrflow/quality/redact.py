"""Redaction of a known secret in every spelling a message can carry it.

Drill reports end up in Prefect logs and artefact stores that many people can
read, so every string `run_gx` lets out passes through a `Redactor`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable


class Redactor:
    """Replaces every form a known secret can take in a message with ``***``.

    A password reaches error texts and evidence raw, percent-encoded (once by a
    URL, twice when that URL is itself a query value; in upper or lower case,
    with a space as ``+``, with any set of characters left unencoded), with
    ``}`` doubled by ODBC's brace escaping, and escaped by JSON, ``repr`` or
    HTML.  Rather than list those spellings, each character of the secret
    matches any of its own spellings, so any mixture of them is caught.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(_secret_pattern(s) for s in unique)) if unique else None
        )

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern is not None else text


def _hex_byte(byte: int) -> str:
    # Explicit [aA] classes instead of re.IGNORECASE, which would also make the
    # secret's own letters match case-insensitively and blank unrelated words.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in f"{byte:02X}")


def _char_pattern(char: str) -> str:
    encoded = char.encode("utf-8")
    single = "".join(f"%{_hex_byte(b)}" for b in encoded)
    double = "".join(f"%25{_hex_byte(b)}" for b in encoded)
    spellings = {re.escape(char), single, double}
    for escaped in (json.dumps(char)[1:-1], json.dumps(char, ensure_ascii=False)[1:-1],
                    repr(char)[1:-1], html.escape(char), f"&#{ord(char)};",
                    f"&#x{ord(char):x};", f"&#x{ord(char):X};"):
        spellings.add(re.escape(escaped))
    if char in "'\"":
        # repr() escapes a quote only when the text holds both kinds.
        spellings.add(re.escape("\\" + char))
    if char == " ":
        spellings |= {r"\+", f"%{_hex_byte(ord('+'))}", f"%25{_hex_byte(ord('+'))}"}
    token = "(?:" + "|".join(sorted(spellings, key=len, reverse=True)) + ")"
    # ODBC writes a braced value's "}" as "}}".
    return token + token + "?" if char == "}" else token


def _secret_pattern(secret: str) -> str:
    return "".join(_char_pattern(char) for char in secret)
