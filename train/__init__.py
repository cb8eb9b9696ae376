"""Training side of tagger: data engine, dataset loaders, training loop, evaluation.

Imported lazily by the CLI: the tagger itself never needs it.
"""
