"""`cliquegraph compile` (registered by cli.py; torch is imported only when it runs)."""


def register(sub, add_set):
    pass
