"""Fast WordPiece tokenization (LinMaxMatch, end-to-end one pass), ids identical to HF tokenizers."""

from paretoml.text.wordpiece import Encoding, WordPieceConfig, WordPieceTokenizer

__all__ = ["Encoding", "WordPieceConfig", "WordPieceTokenizer"]
