"""A hook implementation whose name is no hook: start-up must fail, not ignore it."""

from gateway import hookimpl


@hookimpl
def rewrite_reqest(request):  # sic
    return None
