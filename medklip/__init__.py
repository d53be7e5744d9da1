__version__ = "0.1.0"

def __getattr__(name):
    "`medklip.load` and `medklip.MedKLIPModel` import `medklip.api` (and torch) on first use, so `import medklip` stays light."
    if name in ('load', 'MedKLIPModel'):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'medklip' has no attribute {name!r}")
