"""The vCenter side of VM Recovery: the only package that imports pyvmomi.

Everything it returns is a plain dataclass from :mod:`app.vadp.types`, so no pyvmomi type
ever leaves this package. Calls are blocking (pyvmomi is synchronous); async callers use the
``async`` wrappers, which run them in a worker thread.
"""
