"""The project's own error for a bad release, and the record of what a lenient read skipped."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger("reghead")


class ReleaseError(Exception):
    """A release file is missing, damaged or not in the upstream RegHead format.

    The message names the file (shard or asset), the sample key and the value at fault, and
    says what to do. The same facts are kept as attributes for programs.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None, hint: str | None = None):
        self.file = file
        self.key = key
        self.hint = hint
        where = ", ".join(part for part in (f"file {file!r}" if file else "", f"sample {key!r}" if key else "") if part)
        text = f"{where}: {message}" if where else message
        if hint:
            text = f"{text}. {hint}"
        super().__init__(text)


class ChecksumMismatch(ReleaseError):
    """A shard's bytes do not have the SHA-256 that SHA256SUMS lists: a download to do again."""

    def __init__(self, *, file: str, expected: str, actual: str, hint: str | None = None):
        self.expected = expected
        self.actual = actual
        super().__init__(f"SHA-256 mismatch: SHA256SUMS expects {expected}, the shard has {actual}", file=file, hint=hint)


@dataclass
class Problems:
    """Collects what a read found wrong with single samples.

    With `strict=True` (the default), a bad sample raises `ReleaseError`. With `strict=False`
    the sample is skipped, counted and logged as a warning. Notes (kept samples that have
    something worth knowing, such as an identity name that could not be split) are only
    counted and logged, in both modes.
    """

    strict: bool = True
    skipped: Counter = field(default_factory=Counter)
    noted: Counter = field(default_factory=Counter)

    def bad_sample(self, kind: str, message: str, *, file: str, key: str | None) -> None:
        error = ReleaseError(message, file=file, key=key, hint=_LENIENT_HINT)
        if self.strict:
            raise error
        self.skipped[kind] += 1
        logger.warning("skipped a sample: %s", error)

    def note(self, kind: str, message: str, *, file: str, key: str | None) -> None:
        self.noted[kind] += 1
        logger.warning("%s", ReleaseError(message, file=file, key=key))

    def summary(self) -> str:
        parts = [f"{n} skipped ({kind})" for kind, n in sorted(self.skipped.items())]
        parts += [f"{n} noted ({kind})" for kind, n in sorted(self.noted.items())]
        return ", ".join(parts) or "no problems"


_LENIENT_HINT = "Re-download the shard; to skip such samples instead, read with strict=False"
