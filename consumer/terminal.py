"""Text from the data, made safe for an operator's terminal.

Site ids, event ids and reasons come from the public endpoint: control characters in them
(ESC, CR, BEL, bidirectional overrides...) would reach the terminal that prints them and could
rewrite or hide what it shows. The human output of the operator commands prints them through
`escaped`; their JSON output is escaped by JSON itself.
"""

from __future__ import annotations


def escaped(text: str) -> str:
    """`text` with every character that is not printable (str.isprintable: controls, format
    characters, separators other than the space) written as Python writes it in a literal
    (`\\n`, `\\x1b`, `\\u202e`), and backslashes doubled so that an escape cannot be forged."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(c) for c in text)


_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if short := _SHORT.get(char):
        return short
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
