"""A hook implementation asking for an argument the hook does not have."""

from gateway import hookimpl


@hookimpl
def rewrite_request(request, body):
    return None
