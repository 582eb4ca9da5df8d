"""What the command line prints: its own messages, and third-party noise kept out by default.

Lightning logs every hardware line twice (its own handler and the root one), adds tips about
cloud loggers and warns about checkpoint folders that a resumed run fills on purpose; PyTorch
and Pillow add deprecation and decompression-bomb warnings that carry no action for the user.
:func:`configure_output` keeps all of that out unless ``verbose``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["NOISY_LOGGERS", "QUIET_WARNINGS", "configure_output", "quiet_lightning"]

#: Third-party loggers that are set to WARNING unless verbose.
NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")

#: Warning messages (regular expressions) that are hidden unless verbose.
QUIET_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",  # resumed runs fill it on purpose
    r"The number of training batches .* is smaller than the logging interval",
    r".*isinstance\(treespec, LeafSpec\).*",  # a PyTorch deprecation inside Lightning
    r".*does not have many workers which may be a bottleneck.*",
    r"The dirpath has changed from .*",
    r"Image size \(\d+ pixels\) exceeds limit .*",  # Pillow on full-resolution films
    r"__array__ implementation doesn't accept a copy keyword.*",  # pycocotools on NumPy 2
)

_verbose = False


def configure_output(verbose: bool = False) -> None:
    """Log the library's INFO messages once, plain, and quiet third-party noise.

    Parameters
    ----------
    verbose : bool
        Keep third-party INFO logs and warnings (for debugging).
    """
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # no-op if configured
    logging.getLogger("spinelandmarks").setLevel(logging.INFO)
    try:  # Lightning configures its loggers when first imported: let it do so now, then adjust
        import lightning.pytorch  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency, but not needed to run this module
        pass
    level = logging.INFO if verbose else logging.WARNING
    for name in NOISY_LOGGERS:
        log = logging.getLogger(name)
        log.setLevel(level)
        # Lightning adds its own handler when it is imported before logging is configured:
        # then its lines must not also reach the root handler (each would print twice).
        log.propagate = not log.handlers
    if not verbose:
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within: Lightning's hardware lines, tips and known warnings are hidden, for library
    functions that use a ``Trainer`` as an implementation detail (``predict_files``).

    Does nothing after ``configure_output(verbose=True)``.
    """
    if _verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    saved = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            for pattern in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for log, level in zip(loggers, saved, strict=True):
            log.setLevel(level)
