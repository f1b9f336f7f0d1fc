"""The one form of a bad-argument error: which parameter, its value, and what is allowed.

Each rule lives in the module that uses the parameter: the ERC band's in :func:`erc_core.band.check_band`, the
clip settings' in :func:`erc_core.losses.check_clip` (and the Clip-Cov / KL-Cov options' beside it), the tasks'
sizes in :mod:`erc_core.rl.tasks`. Those checks raise :class:`ParamError` under the name their caller passes, so
the trainer's :class:`~erc_core.rl.config.Config` calls the same checks with its config keys and reports their
errors as config errors, without writing the rules again.
"""

from __future__ import annotations

__all__ = ["ParamError", "require"]


class ParamError(ValueError):
    """A bad argument: ``name``, its ``value`` and what is ``allowed`` (a phrase: "an integer >= 1")."""

    def __init__(self, name: str, value, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name} must be {allowed}, got {value!r}")


def require(ok: bool, name: str, value, allowed: str) -> None:
    """Raise :class:`ParamError` ``(name, value, allowed)`` unless ``ok``."""
    if not ok:
        raise ParamError(name, value, allowed)
