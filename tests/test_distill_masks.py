"""ROSD first-error masks (ROSD, arXiv 2605.28014): quote location, char -> token mapping, suffix masks."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from resd.distill import (
    char_to_token_index,
    error_suffix_mask,
    find_error_span,
    locate_error_token,
)
from resd.errors import UserError

RESPONSE = "Let x = 3.\nThen  2x = 5,\n\tso x = 2.5.\nAnswer: 2.5"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A real byte-level BPE tokenizer trained in code (no network)."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([RESPONSE, "the answer is x = 3 + 4 so x equals seven"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>")


def test_exact_match_returns_first_occurrence() -> None:
    assert find_error_span(RESPONSE, "2x = 5") == RESPONSE.index("2x = 5")
    assert find_error_span("a = 1, a = 1", "a = 1") == 0


def test_stripped_quote_matches() -> None:
    assert find_error_span(RESPONSE, "  2x = 5,\n ") == RESPONSE.index("2x = 5,")


def test_whitespace_normalised_match_maps_back_to_original_index() -> None:
    # The reflector re-wrapped the quote: one space where the response has a newline and a tab.
    quote = "2x = 5, so x = 2.5"
    assert quote not in RESPONSE
    assert find_error_span(RESPONSE, quote) == RESPONSE.index("2x = 5")
    # Characters after a collapsed run map back past the whole run.
    assert find_error_span("x  =\n y;  z = 1", "y; z = 1") == 6


def test_not_found_cases() -> None:
    assert find_error_span(RESPONSE, "") is None
    assert find_error_span(RESPONSE, "  \n") is None
    assert find_error_span(RESPONSE, "x = 4") is None
    assert find_error_span(RESPONSE, "THEN 2X = 5") is None  # case-sensitive by design
    assert find_error_span("", "x") is None


def test_char_to_token_index_from_offsets() -> None:
    offsets = [(0, 0), (0, 3), (3, 4), (4, 4), (5, 9)]  # a special token, a gap at char 4
    assert char_to_token_index(offsets, "", 0) == 1
    assert char_to_token_index(offsets, "", 2) == 1
    assert char_to_token_index(offsets, "", 3) == 2
    assert char_to_token_index(offsets, "", 4) == 4  # char in a gap -> next token
    assert char_to_token_index(offsets, "", 8) == 4
    assert char_to_token_index(offsets, "", 9) == 5  # past the end
    with pytest.raises(UserError):
        char_to_token_index(offsets, "", -1)


def test_char_to_token_index_with_a_fast_tokenizer(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.encode(RESPONSE, add_special_tokens=False)
    for quote in ["2x = 5", "Answer", "x = 2.5", "Let"]:
        char_index = RESPONSE.index(quote)
        index = char_to_token_index(tokenizer, RESPONSE, char_index)
        # Decoding from that token on starts at (or just before, for a merged space) the quote.
        suffix = tokenizer.decode(ids[index:])
        assert suffix.lstrip().startswith(quote), (quote, suffix)
        assert quote not in tokenizer.decode(ids[:index])


def test_prefix_retokenising_fallback_agrees_at_token_boundaries(tokenizer: PreTrainedTokenizerFast) -> None:
    class SlowOnly:
        """The slow-tokenizer path: only encode, no offsets."""

        is_fast = False

        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=add_special_tokens)

    char_index = RESPONSE.index("Answer")  # preceded by "\n": a token boundary
    assert char_to_token_index(SlowOnly(), RESPONSE, char_index) == char_to_token_index(tokenizer, RESPONSE, char_index)


def test_locate_error_token_end_to_end(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.encode(RESPONSE, add_special_tokens=False)
    start = locate_error_token(RESPONSE, "2x = 5,\nso x = 2.5", tokenizer, len(ids))
    assert start is not None and 0 < start < len(ids)
    assert tokenizer.decode(ids[start:]).lstrip().startswith("2x = 5")
    assert locate_error_token(RESPONSE, "not in there", tokenizer, len(ids)) is None
    assert locate_error_token(RESPONSE, None, tokenizer, len(ids)) is None
    # Re-tokenisation may disagree with the sampled ids; a found error keeps the last token.
    assert locate_error_token(RESPONSE, "Answer: 2.5", tokenizer, 3) == 2


def test_error_suffix_mask() -> None:
    assert error_suffix_mask(5, 2) == [0, 0, 1, 1, 1]
    assert error_suffix_mask(5, None) == [1, 1, 1, 1, 1]
    assert error_suffix_mask(5, 0) == [1, 1, 1, 1, 1]
    assert error_suffix_mask(5, 9) == [0, 0, 0, 0, 1]
    assert error_suffix_mask(0, 3) == []
