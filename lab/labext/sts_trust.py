"""sts_trust: placeholder, being written."""


def install(ctx):
    pass
