"""`tx translate --target-lang deu`: multilingual Marian models choose the output language by a
`>>deu<<` token at the start of the source. The source tokenizer is wrapped so that every line
gets that token's id first, whichever engine decodes (both encode through engine.src_tok)."""

from __future__ import annotations

from ..errors import UsageError


class WithTargetLanguage:
    """A source tokenizer whose every encoding starts with one language token."""

    def __init__(self, tok, code: str, code_id: int):
        self.tok, self.code, self.code_id = tok, code, code_id

    def encode(self, text: str) -> list[int]:
        return [self.code_id] + self.tok.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[self.code_id] + ids for ids in self.tok.encode_batch(texts)]

    def tokens(self, text: str) -> list[str]:
        return [self.code] + self.tok.tokens(text)

    def __getattr__(self, name):  # decode, vocab_size, id_to_token ...: the tokenizer's own
        return getattr(self.tok, name)


def language_codes(tok) -> list[str]:
    codes = getattr(tok, "language_codes", None)
    return codes() if codes is not None else []


def set_target_language(engine, lang: str) -> None:
    """Wrap engine.src_tok; UsageError in one line when the vocabulary lacks the language."""
    code = lang if lang.startswith(">>") else f">>{lang}<<"
    codes = language_codes(engine.src_tok)
    if not codes:
        raise UsageError(f"--target-lang {lang}: this model's source vocabulary has no >>xxx<< language tokens "
                         "(it translates into one language only)")
    if code not in codes:
        names = " ".join(c[2:-2] for c in codes)
        raise UsageError(f"--target-lang {lang}: not in the source vocabulary; it has: {names}")
    engine.src_tok = WithTargetLanguage(engine.src_tok, code, engine.src_tok.lookup[code])
