"""The Anthropic Messages API mock: request checks, answers and its RSGI app."""
