"""Shipped model files (installed as the ``tagger.models`` package)."""
