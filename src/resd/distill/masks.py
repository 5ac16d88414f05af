"""Token masks for distillation: ROSD's first-error suffix (ROSD, arXiv 2605.28014).

ROSD (arXiv 2605.28014): a reflector quotes the first erroneous span of a failed response. We
find that quote in the response text, map its first character to a token index, and distil only
from that token to the end of the response (the whole response when the quote is not found).
Everything here is pure: strings, offsets and tensors in, indices and masks out.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import Any, Protocol

from resd.errors import UserError

__all__ = [
    "find_error_span",
    "char_to_token_index",
    "locate_error_token",
    "error_suffix_mask",
]

Offsets = Sequence[tuple[int, int]]
_WHITESPACE = re.compile(r"\s+")


class _Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer we use (structural, so no transformers import)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def _collapse_whitespace(text: str) -> tuple[str, list[int]]:
    """``text`` with every whitespace run replaced by one space, and for each kept character
    its index in ``text`` (so a match in the collapsed text maps back to the original)."""
    chars: list[str] = []
    origin: list[int] = []
    position = 0
    for match in _WHITESPACE.finditer(text):
        for i in range(position, match.start()):
            chars.append(text[i])
            origin.append(i)
        chars.append(" ")
        origin.append(match.start())
        position = match.end()
    for i in range(position, len(text)):
        chars.append(text[i])
        origin.append(i)
    return "".join(chars), origin


def find_error_span(response: str, quote: str) -> int | None:
    """Character index in ``response`` where the quoted first error starts, or None (ROSD, arXiv 2605.28014).

    Tried in order, first occurrence wins:
      1. the quote exactly as given;
      2. the quote with leading/trailing whitespace stripped;
      3. both texts with every whitespace run collapsed to one space (models often re-wrap or
         re-indent what they quote); the match is mapped back to the original response.
    Matching is case-sensitive: a quote that only matches after changing case is not the
    model's text and is treated as not found. An empty or whitespace-only quote is not found.
    """
    if not quote or not quote.strip() or not response:
        return None
    exact = response.find(quote)
    if exact >= 0:
        return exact
    stripped = quote.strip()
    found = response.find(stripped)
    if found >= 0:
        return found
    collapsed_response, origin = _collapse_whitespace(response)
    collapsed_quote, _ = _collapse_whitespace(stripped)
    found = collapsed_response.find(collapsed_quote)
    if found >= 0:
        return origin[found]
    return None


def _index_from_offsets(offsets: Offsets, char_index: int) -> int:
    """First token whose character span ends after ``char_index`` (the token holding it)."""
    # Zero-width entries (special tokens report (0, 0)) hold no character; skip them.
    ends = [end if end > start else -1 for start, end in offsets]
    running_max: list[int] = []
    best = -1
    for end in ends:
        best = max(best, end)
        running_max.append(best)
    return bisect.bisect_right(running_max, char_index)


def char_to_token_index(offsets_or_tokenizer: Offsets | _Tokenizer, response: str, char_index: int) -> int:
    """Token index of the token that contains character ``char_index`` of ``response``.

    ``offsets_or_tokenizer`` is either the ``(start, end)`` character offsets of the response
    tokens (preferred: exact for the tokens they describe), or a tokenizer. With a fast
    tokenizer the offsets come from ``return_offsets_mapping``; otherwise the prefix
    ``response[:char_index]`` is re-tokenised and its length used (approximate at a token
    boundary that merges across the cut). Returns ``len(tokens)`` when the index is past the
    last token; clip to the response length at the call site.
    """
    if char_index < 0:
        raise UserError(f"char_index={char_index} must be >= 0")
    if isinstance(offsets_or_tokenizer, Sequence) and not isinstance(offsets_or_tokenizer, str):
        return _index_from_offsets(offsets_or_tokenizer, char_index)
    tokenizer = offsets_or_tokenizer
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        return _index_from_offsets([tuple(pair) for pair in encoded["offset_mapping"]], char_index)
    return len(tokenizer.encode(response[:char_index], add_special_tokens=False))


def locate_error_token(
    response: str,
    quote: str | None,
    offsets_or_tokenizer: Offsets | _Tokenizer,
    n_tokens: int,
) -> int | None:
    """ROSD's first-error token index in a response of ``n_tokens`` tokens, or None if the
    quote is missing or not found (ROSD, arXiv 2605.28014). Clipped to ``n_tokens - 1`` so a found error
    always leaves at least the last token to distil."""
    if quote is None:
        return None
    char_index = find_error_span(response, quote)
    if char_index is None or n_tokens <= 0:
        return None
    return min(char_to_token_index(offsets_or_tokenizer, response, char_index), n_tokens - 1)


def error_suffix_mask(n_tokens: int, start_token: int | None) -> list[int]:
    """``[0]*start + [1]*(n_tokens-start)``: distil from the first error to the end (ROSD, arXiv 2605.28014).

    ``start_token=None`` (quote not found) keeps the whole response. The start is clipped to
    ``[0, n_tokens - 1]`` so a non-empty response always keeps at least its last token.
    """
    if n_tokens < 0:
        raise UserError(f"n_tokens={n_tokens} must be >= 0")
    if n_tokens == 0:
        return []
    start = 0 if start_token is None else min(max(start_token, 0), n_tokens - 1)
    return [0] * start + [1] * (n_tokens - start)
