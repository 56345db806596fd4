"""Veille: the market watch. Feeds and status pages in, classified items and price quotes
out, opportunities for the operator to decide on.

sources.py   fetch (conditional GET) and parse feeds and status pages, untrusted throughout
classifier.py   MiniLM (onnxruntime + tokenizers) and a trained head: one label per item
extract.py   provider, model and $ per million tokens from an item's text
"""
