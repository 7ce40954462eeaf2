"""DiscoFace engine: face model, renderer, perception, generator, session. No Qt imports here."""
__version__ = "0.1.0"
