"""A plugin factory with a bug."""


def make_plugin(config):
    return {}["missing"]
