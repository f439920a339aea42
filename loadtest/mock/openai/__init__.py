"""The OpenAI-compatible mock: its wire format, its answers and its RSGI app."""
