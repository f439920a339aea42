"""Translations between client APIs and backend schemas (pure: bytes and dicts in, bytes out)."""

from .base import StreamTranslator, TranslationError, Translator, client_error

__all__ = ["StreamTranslator", "TranslationError", "Translator", "client_error"]
