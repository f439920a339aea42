"""The Vertex AI mock: Google's token endpoints (``auth``), Gemini request checks (``validate``),
answers (``answers``), error shapes (``errors``) and its RSGI app (``app``)."""
