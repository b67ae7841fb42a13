"""Bridges between npoptim and other frameworks.

:mod:`npoptim.interop.torch` converts optimizer and scheduler ``state_dict`` s to and from
``torch.optim``'s, so that a run can move between the two mid-training. Each bridge imports
its framework only when one of its functions is called.
"""

__all__: list[str] = []
