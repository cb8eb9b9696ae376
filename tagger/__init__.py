"""tagger: write the musical instruments heard in each track into its tags."""
__version__ = "0.1.0"
