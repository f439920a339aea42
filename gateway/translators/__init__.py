"""Translations between client APIs and backend schemas (pure: bytes and dicts in, bytes out)."""

from .base import (
    TRANSLATORS,
    StreamTranslator,
    TranslationError,
    Translator,
    client_error,
    translator_for,
)

__all__ = ["TRANSLATORS", "StreamTranslator", "TranslationError", "Translator", "client_error", "translator_for"]
