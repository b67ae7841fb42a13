"""References of the optimizers beyond torch.optim, written from their papers independently
of ``src/`` (see ``tests/beyond_harness.py`` for the signature ``ref(p, g, state, t, **kw)``).

Each module defines ``NAME`` (the npoptim class name) and ``reference``.
"""
