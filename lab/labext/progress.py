"""progress: placeholder, being written."""


def install(ctx):
    pass
