"""Speech tokenizers: audio (or alignments) -> discrete units."""

from textless.tokenizers.phones import OraclePhoneTokenizer

__all__ = ["OraclePhoneTokenizer"]
