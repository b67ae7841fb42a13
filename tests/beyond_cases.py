"""The beyond-torch.optim optimizers, their oracles and the configurations they are run in.

One entry per optimizer; ``tests/test_<name>.py`` and ``tools/make_golden_beyond.py`` iterate
``CASES``. Configurations are the ones the oracle's own tests use (pytorch_optimizer 4.1.0's
``tests/recipes.py``, ``tests/optimizers/test_soap.py``, ``tests/test_wrapper_optimizers.py``;
schedulefree 1.4.1's ``test_schedulefree.py``), plus the defaults and the options they leave
out.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

import npoptim
from beyond_harness import Case, Shapes, module_attribute

# ----------------------------------------------------------------------------- SOAP


def _soap_shapes(kwargs: dict[str, Any]) -> Shapes:
    # A matrix, a vector, a scalar and a 4-D tensor. Under precondition_1d a vector's first
    # preconditioner g g^T has a repeated zero eigenvalue unless it has at most two entries,
    # and the eigenvectors of a repeated eigenvalue are LAPACK's free choice (NumPy's and
    # torch's differ), so the vector is (2,) there. With merge_dims the oracle fails on a
    # vector short enough to merge into one axis, so the vector is (5,) there.
    vector = (2,) if kwargs.get("precondition_1d") and not kwargs.get("merge_dims") else (5,)
    return [(3, 4), vector, (), (2, 2, 1, 3)]


@contextlib.contextmanager
def _soap_qr_in_dtype(dtype: Any) -> Iterator[None]:
    """pytorch_optimizer's SOAP with its eigenbasis QR in the parameters' dtype.

    The oracle casts the power-iteration matrix to ``torch.float32`` before its QR; inside
    this context its module sees a ``torch`` whose ``float32`` is the parameters' dtype, so
    the cast does nothing. That is the oracle's only departure from the parameters' dtype.
    """
    import torch
    from pytorch_optimizer.optimizer import soap as oracle

    proxy = types.SimpleNamespace(
        **{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")}
    )
    proxy.float32 = {np.float64: torch.float64, np.float32: torch.float32}[np.dtype(dtype).type]
    with module_attribute(oracle, "torch", proxy):
        yield


def _build_oracle_soap(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from pytorch_optimizer import SOAP

    return SOAP(params, **kwargs)


def _build_soap(params: list[npoptim.Parameter], kwargs: dict[str, Any]) -> npoptim.Optimizer:
    return npoptim.SOAP(params, **kwargs)


SOAP = Case(
    name="SOAP",
    configs=[
        ("default", {}),
        # tests/recipes.py
        (
            "recipe: lr 1, shampoo_beta, precondition every step, precondition_1d",
            {
                "lr": 1e0,
                "shampoo_beta": 0.95,
                "precondition_frequency": 1,
                "merge_dims": False,
                "precondition_1d": True,
            },
        ),
        # tests/optimizers/test_soap.py
        (
            "merge_dims, precondition_1d, max_precondition_dim 4",
            {
                "merge_dims": True,
                "precondition_1d": True,
                "max_precondition_dim": 4,
                "precondition_frequency": 1,
            },
        ),
        (
            "merge_dims, max_precondition_dim 1, normalize_gradient",
            {
                "merge_dims": True,
                "precondition_1d": False,
                "max_precondition_dim": 1,
                "precondition_frequency": 1,
                "normalize_gradient": True,
            },
        ),
        (
            "merge_dims channels_last, max_precondition_dim 2",
            {
                "merge_dims": True,
                "precondition_1d": True,
                "max_precondition_dim": 2,
                "precondition_frequency": 1,
                "data_format": "channels_last",
            },
        ),
        # options the oracle's tests leave out
        ("maximize, precondition every 3 steps", {"maximize": True, "precondition_frequency": 3}),
        (
            "no bias correction, no weight decay, betas",
            {"correct_bias": False, "weight_decay": 0.0, "lr": 0.01, "betas": (0.9, 0.99)},
        ),
        ("max_precondition_dim 3", {"max_precondition_dim": 3, "precondition_frequency": 2}),
    ],
    build_npoptim=_build_soap,
    build_oracle=_build_oracle_soap,
    oracle_module="pytorch_optimizer",
    shapes=_soap_shapes,
    exact_oracle=_soap_qr_in_dtype,
)

# ------------------------------------------------------------------------ Lookahead


def _build_lookahead(params: list[npoptim.Parameter], kwargs: dict[str, Any]) -> npoptim.Optimizer:
    name, inner = kwargs["optimizer"]
    rest = {k: v for k, v in kwargs.items() if k != "optimizer"}
    return npoptim.Lookahead(getattr(npoptim, name)(params, **inner), **rest)


def _build_oracle_lookahead(params: list[Any], kwargs: dict[str, Any]) -> Any:
    import torch
    from pytorch_optimizer import Lookahead

    name, inner = kwargs["optimizer"]
    rest = {k: v for k, v in kwargs.items() if k != "optimizer"}
    return Lookahead(getattr(torch.optim, name)(params, **inner), **rest)


_ADAMW = ("AdamW", {"lr": 5e-1})
_SGD_MOMENTUM = ("SGD", {"lr": 0.05, "momentum": 0.9})

LOOKAHEAD = Case(
    name="Lookahead",
    configs=[
        ("default over SGD", {"optimizer": ("SGD", {"lr": 0.1})}),
        # tests/recipes.py: build_lookahead
        (
            "recipe: AdamW lr 0.5, weight_decay",
            {"optimizer": ("AdamW", {"lr": 5e-1, "weight_decay": 1e-3})},
        ),
        # tests/test_wrapper_optimizers.py: test_lookahead, each pullback_momentum
        ("AdamW, pullback_momentum none", {"optimizer": _ADAMW, "pullback_momentum": "none"}),
        ("AdamW, pullback_momentum reset", {"optimizer": _ADAMW, "pullback_momentum": "reset"}),
        (
            "AdamW, pullback_momentum pullback",
            {"optimizer": _ADAMW, "pullback_momentum": "pullback"},
        ),
        # tests/optimizer_cases.py: GRADIENT_OPTIONS
        ("k 1", {"optimizer": _ADAMW, "k": 1}),
        # where the momentum options matter: SGD with momentum
        ("SGD momentum, reset", {"optimizer": _SGD_MOMENTUM, "pullback_momentum": "reset"}),
        ("SGD momentum, pullback", {"optimizer": _SGD_MOMENTUM, "pullback_momentum": "pullback"}),
        ("alpha 0.8, k 3, Adam", {"optimizer": ("Adam", {"lr": 0.1}), "k": 3, "alpha": 0.8}),
        (
            "alpha 0.2, k 4, SGD nesterov",
            {
                "optimizer": ("SGD", {"lr": 0.05, "momentum": 0.5, "nesterov": True}),
                "k": 4,
                "alpha": 0.2,
            },
        ),
    ],
    build_npoptim=_build_lookahead,
    build_oracle=_build_oracle_lookahead,
    oracle_module="pytorch_optimizer",
    missing=(9, 1),  # the tenth step: a synchronization step for k = 5
)

CASES = {case.name: case for case in [SOAP, LOOKAHEAD]}

# ------------------------------------------------------------------- Lion and LAMB
# The elementwise newcomers, built on the kernel registry (tests/test_beyond_elementwise.py;
# their references against the oracles: tests/test_beyond_references.py).


def _build_named(name: str) -> Any:
    def build(params: list[npoptim.Parameter], kwargs: dict[str, Any]) -> npoptim.Optimizer:
        return getattr(npoptim, name)(params, **kwargs)  # type: ignore[no-any-return]

    return build


def _build_oracle_lion(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from lion_pytorch import Lion

    return Lion(params, **kwargs)


def _build_oracle_lamb(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from pytorch_optimizer import Lamb

    return Lamb(params, **kwargs)


LION = Case(
    name="Lion",
    configs=[
        ("default", {}),
        # lion-pytorch's README
        ("README: lr 1e-4, weight_decay 1e-2", {"lr": 1e-4, "weight_decay": 1e-2}),
        (
            "decoupled_weight_decay",
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        # pytorch_optimizer's tests/recipes.py for its own Lion (the same algorithm)
        ("recipe: lr 0.5, weight_decay", {"lr": 5e-1, "weight_decay": 1e-3}),
        ("recipe: betas (0.75, 0.5)", {"lr": 5e-1, "betas": (0.75, 0.5), "weight_decay": 1e-3}),
    ],
    build_npoptim=_build_named("Lion"),
    build_oracle=_build_oracle_lion,
    oracle_module="lion_pytorch",
)

LAMB = Case(
    name="LAMB",
    configs=[
        ("default", {}),
        # pytorch_optimizer's tests/recipes.py
        ("recipe: lr 0.1, weight_decay", {"lr": 1e-1, "weight_decay": 1e-3}),
        (
            "recipe: weight_decouple False",
            {"lr": 1e-1, "weight_decay": 1e-3, "weight_decouple": False},
        ),
        (
            "recipe: pre_norm, max_grad_norm 0",
            {"lr": 1e-1, "weight_decay": 1e-3, "pre_norm": True, "max_grad_norm": 0.0},
        ),
        (
            "recipe: grad_averaging False",
            {"lr": 5e-2, "weight_decay": 1e-3, "grad_averaging": False},
        ),
        ("recipe: adam, eps 1e-8", {"lr": 5e-2, "weight_decay": 1e-3, "adam": True, "eps": 1e-8}),
        (
            "recipe: pre_norm, eps 1e-8",
            {"lr": 1e-1, "weight_decay": 1e-3, "pre_norm": True, "eps": 1e-8},
        ),
        (
            "recipe: rectify, degenerated_to_sgd",
            {"lr": 5e-1, "weight_decay": 1e-3, "rectify": True, "degenerated_to_sgd": True},
        ),
        # options the recipes leave out
        (
            "maximize, fixed_decay",
            {"lr": 1e-2, "weight_decay": 1e-2, "maximize": True, "fixed_decay": True},
        ),
    ],
    build_npoptim=_build_named("LAMB"),
    build_oracle=_build_oracle_lamb,
    oracle_module="pytorch_optimizer",
    # No 0-d parameter: for a scalar the trust ratio makes each step ±|θ| times the step
    # size (10 x lr at the first step), which lands it on or next to 0, where a relative
    # comparison measures only the cancellation.
    shapes=lambda kwargs: [(3, 4), (5,), (2, 3)],
)


def _build_oracle_ademamix(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from pytorch_optimizer import AdEMAMix

    return AdEMAMix(params, **kwargs)


ADEMAMIX = Case(
    name="AdEMAMix",
    # each of its options, and the recipes of pytorch_optimizer's own tests
    configs=[
        ("default", {}),
        ("lr 0.1, L2 weight_decay", {"lr": 1e-1, "weight_decay": 1e-2}),
        (
            "weight_decouple (the paper's)",
            {"lr": 1e-1, "weight_decay": 1e-2, "weight_decouple": True},
        ),
        (
            "fixed_decay, maximize",
            {
                "lr": 1e-2,
                "weight_decay": 1e-2,
                "weight_decouple": True,
                "fixed_decay": True,
                "maximize": True,
            },
        ),
        ("t_alpha_beta3 10, alpha 8", {"lr": 5e-2, "t_alpha_beta3": 10.0, "alpha": 8.0}),
        ("betas, eps", {"lr": 5e-2, "betas": (0.8, 0.99, 0.999), "eps": 1e-6}),
        # pytorch_optimizer's tests/recipes.py (its tests, not in its wheel); its fourth
        # recipe sets cautious and stable_adamw, which npoptim does not provide
        ("recipe: lr 1", {"lr": 1e0}),
        ("recipe: lr 1, t_alpha_beta3 5", {"lr": 1e0, "t_alpha_beta3": 5}),
        (
            "recipe: lr 1, weight_decouple, fixed_decay",
            {"lr": 1e0, "weight_decay": 1e-3, "weight_decouple": True, "fixed_decay": True},
        ),
    ],
    build_npoptim=_build_named("AdEMAMix"),
    build_oracle=_build_oracle_ademamix,
    oracle_module="pytorch_optimizer",
    # No 0-d parameter: at lr 0.05-0.1 a scalar's steps (α = 5 of slow momentum) carry it
    # back and forth across 0, where a relative comparison measures float32's cancellation
    # (measured with a scalar: the oracle's own float32 run up to 4.6e-5 from its float64
    # one, npoptim's float32 run 1.4e-6 to 9.7e-6 from the oracle's; matrix and vector
    # within 2e-7).
    shapes=lambda kwargs: [(3, 4), (5,), (2, 3)],
)


def _build_oracle_schedulefree(name: str) -> Any:
    def build(params: list[Any], kwargs: dict[str, Any]) -> Any:
        import schedulefree

        opt = getattr(schedulefree, name)(params, **kwargs)
        opt.train()  # both start in evaluation mode
        return opt

    return build


def _build_schedulefree(name: str) -> Any:
    def build(params: list[npoptim.Parameter], kwargs: dict[str, Any]) -> npoptim.Optimizer:
        opt: npoptim.Optimizer = getattr(npoptim, name)(params, **kwargs)
        opt.train()  # type: ignore[attr-defined]
        return opt

    return build


ADAMW_SCHEDULEFREE = Case(
    name="AdamWScheduleFree",
    configs=[
        ("default", {}),
        # schedulefree's test_schedulefree.py: test_schedulefree_adam
        (
            "test: lr 0.3, warmup_steps 5, weight_decay 0.5",
            {"lr": 0.3, "warmup_steps": 5, "weight_decay": 0.5},
        ),
        # the options its tests leave at their defaults
        (
            "r 0.5, weight_lr_power 1, warmup 3",
            {"lr": 0.05, "r": 0.5, "weight_lr_power": 1.0, "warmup_steps": 3},
        ),
        ("betas, eps", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}),
    ],
    build_npoptim=_build_schedulefree("AdamWScheduleFree"),
    build_oracle=_build_oracle_schedulefree("AdamWScheduleFree"),
    oracle_module="schedulefree",
)

SGD_SCHEDULEFREE = Case(
    name="SGDScheduleFree",
    configs=[
        ("default", {}),
        # schedulefree's test_schedulefree.py: test_schedulefree_sgd
        (
            "test: lr 0.3, warmup_steps 5, weight_decay 0.5",
            {"lr": 0.3, "warmup_steps": 5, "weight_decay": 0.5},
        ),
        # test_schedulefree_wrapper (against ScheduleFreeWrapper over torch's SGD)
        (
            "test: lr 0.3, weight_decay 0.1, momentum 0.9, foreach False",
            {"lr": 0.3, "weight_decay": 0.1, "momentum": 0.9, "foreach": False},
        ),
        # the options its tests leave at their defaults
        (
            "r 0.5, weight_lr_power 1, warmup 3",
            {"lr": 0.05, "r": 0.5, "weight_lr_power": 1.0, "warmup_steps": 3},
        ),
        ("momentum 0.5, weight_lr_power 0", {"lr": 0.1, "momentum": 0.5, "weight_lr_power": 0.0}),
    ],
    build_npoptim=_build_schedulefree("SGDScheduleFree"),
    build_oracle=_build_oracle_schedulefree("SGDScheduleFree"),
    oracle_module="schedulefree",
)

CASES.update({case.name: case for case in [LION, LAMB, ADEMAMIX, ADAMW_SCHEDULEFREE]})
CASES.update({case.name: case for case in [SGD_SCHEDULEFREE]})


#: The configurations of the elementwise newcomers, for the tests that iterate the registry
#: (``test_paths.py``, ``test_allocations.py``) alongside torch's ``configs.CONFIGS``: their
#: optimizers are put in train mode there (:func:`in_train_mode`).
ELEMENTWISE_CONFIGS = {
    case.name: case.configs for case in [LION, LAMB, ADEMAMIX, ADAMW_SCHEDULEFREE]
}
ELEMENTWISE_CONFIGS.update({case.name: case.configs for case in [SGD_SCHEDULEFREE]})


def in_train_mode(opt: npoptim.Optimizer) -> npoptim.Optimizer:
    """``opt`` after ``opt.train()`` where it has a train/eval switch (Schedule-Free)."""
    train = getattr(opt, "train", None)
    if train is not None:
        train()
    return opt


# -------------------------------------------------------------------------- Prodigy


class _Maximizing:
    """The oracle stepping on negated gradients: what ``maximize=True`` means (torch's
    meaning), which ``prodigyopt`` has no argument for. The grads are restored after."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]]
        for g in grads:
            if g is not None:
                g.neg_()
        self.optimizer.step()
        for g in grads:
            if g is not None:
                g.neg_()


def _build_oracle_prodigy(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from prodigyopt import Prodigy

    kwargs = dict(kwargs)
    maximize = kwargs.pop("maximize", False)
    with contextlib.redirect_stdout(None):  # it prints "Using decoupled weight decay"
        opt = Prodigy(params, **kwargs)
    return _Maximizing(opt) if maximize else opt


PRODIGY = Case(
    name="Prodigy",
    # prodigyopt has no tests; these are its README's recommendations and each option of
    # its docstring
    configs=[
        ("default", {}),
        ("README: weight_decay 0.01, slice_p 11", {"weight_decay": 0.01, "slice_p": 11}),
        ("README: L2 weight decay (decouple False)", {"weight_decay": 0.01, "decouple": False}),
        ("README: d_coef 2", {"d_coef": 2.0}),
        ("README: d_coef 0.5", {"d_coef": 0.5}),
        (
            "README diffusion: safeguard_warmup, use_bias_correction, weight_decay, betas",
            {
                "safeguard_warmup": True,
                "use_bias_correction": True,
                "weight_decay": 0.01,
                "betas": (0.9, 0.99),
            },
        ),
        ("README: d0 1e-4", {"d0": 1e-4}),
        ("growth_rate 1.02", {"growth_rate": 1.02}),
        ("no momentum (betas[0] 0)", {"betas": (0.0, 0.999)}),
        ("beta3 0.9, eps 1e-6, lr 0.5", {"beta3": 0.9, "eps": 1e-6, "lr": 0.5}),
        ("maximize (the oracle on -g), slice_p 3", {"maximize": True, "slice_p": 3}),
    ],
    build_npoptim=_build_named("Prodigy"),
    build_oracle=_build_oracle_prodigy,
    oracle_module="prodigyopt",
    # No 0-d parameter (tests/test_prodigy.py runs one apart, in float64): at lr 1 the
    # estimated step carries a scalar across 0, where a relative comparison measures float32's
    # cancellation (measured with a scalar: the oracle's own float32 run up to 4e-2 from its
    # float64 one, npoptim's float32 run up to 1.2e-5 from the oracle's, on the scalar).
    shapes=lambda kwargs: [(3, 4), (5,), (2, 3)],
)

CASES[PRODIGY.name] = PRODIGY

# ----------------------------------------------------------------------------- LARS


def _build_oracle_lars(params: list[Any], kwargs: dict[str, Any]) -> Any:
    from pytorch_optimizer import LARS

    return LARS(params, **kwargs)


LARS = Case(
    name="LARS",
    configs=[
        ("default", {}),
        # pytorch_optimizer's tests/recipes.py
        ("recipe: lr 0.5, weight_decay", {"lr": 5e-1, "weight_decay": 1e-3}),
        ("recipe: lr 0.5, nesterov", {"lr": 5e-1, "nesterov": True}),
        # options the recipes leave out
        ("momentum 0 (no buffer)", {"lr": 1e-1, "momentum": 0.0, "weight_decay": 1e-2}),
        (
            "dampening, maximize",
            {"lr": 1e-2, "dampening": 0.5, "weight_decay": 1e-3, "maximize": True},
        ),
        (
            "trust_coefficient 0.02, weight_decay 0.01",
            {"lr": 1e-1, "trust_coefficient": 2e-2, "weight_decay": 1e-2},
        ),
    ],
    build_npoptim=_build_named("LARS"),
    build_oracle=_build_oracle_lars,
    oracle_module="pytorch_optimizer",
    # A matrix and a 4-D convolution weight (trust ratio), a vector (plain SGD). No 0-d
    # parameter: at lr 0.5 with the curvature 2 of its slot, SGD's step lands a scalar next
    # to 0 (measured with one, nesterov recipe, float32: the oracle's own float32 run 1.1e-6
    # from its float64 one, npoptim's 1.2e-6 from the oracle's; float64 within 5e-16).
    shapes=lambda kwargs: [(3, 4), (5,), (2, 3, 1, 2)],
)
CASES[LARS.name] = LARS
ELEMENTWISE_CONFIGS[LARS.name] = LARS.configs
