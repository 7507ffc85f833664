"""s3_integrity: placeholder, being written."""


def install(ctx):
    pass
