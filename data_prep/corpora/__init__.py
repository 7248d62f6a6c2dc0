"""One reader module per corpus; `base.get_corpus(name)` picks it by name."""
