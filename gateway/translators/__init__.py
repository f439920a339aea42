"""Translations between client APIs and backend schemas (pure: bytes and dicts in, bytes out)."""

from .base import TRANSLATORS, StreamTranslator, TranslationError, Translator, client_error, translator_for

__all__ = ["StreamTranslator", "Translator", "TranslationError", "TRANSLATORS", "translator_for", "client_error"]
