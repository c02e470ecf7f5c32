"""Adapters with side effects: files, stores, registry, validation, plots."""
