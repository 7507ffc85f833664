"""Stub; real implementation follows (owned by L2)."""


def install(ctx):
    pass
