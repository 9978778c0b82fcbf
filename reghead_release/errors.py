"""The project's own error for a bad release, and the record of what a lenient read skipped."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger("reghead")

# How many samples of each kind a summary names, and how much of a bad value a message quotes.
SUMMARY_EXAMPLES = 3
QUOTE_CHARS = 80


def shorten(value, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` cut to about `limit` characters: a bad value is named, never dumped whole."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[: limit + 1])
    elif isinstance(value, str):
        value = value[: limit + 1]
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


class ReleaseError(Exception):
    """A release file is missing, damaged or not in the upstream RegHead format.

    The message names the file (shard or asset), the sample key and the value at fault, and
    says what to do. The same facts are kept as attributes for programs.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None, hint: str | None = None):
        self.message = message
        self.file = file
        self.key = key
        self.hint = hint
        where = ", ".join(part for part in (f"file {file!r}" if file else "", f"sample {shorten(key, 300)}" if key else "") if part)
        text = f"{where}: {message}" if where else message
        if hint:
            text = f"{text}. {hint}"
        super().__init__(text)

    def __reduce__(self):
        # Rebuilt from its attributes, not from `__init__`'s arguments: subclasses take other
        # arguments, and the converter's job processes send these errors to their parent.
        return _rebuild_error, (type(self), self.args, self.__dict__)

    def with_hint(self, hint: str | None) -> ReleaseError:
        """The same error saying what to do in other words (the converter names its own options)."""
        return ReleaseError(self.message, file=self.file, key=self.key, hint=hint)


def _rebuild_error(cls: type[ReleaseError], args: tuple, attributes: dict) -> ReleaseError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(attributes)
    return error


class ChecksumMismatch(ReleaseError):
    """A shard's bytes do not have the SHA-256 that SHA256SUMS lists: a download to do again."""

    def __init__(self, *, file: str, expected: str, actual: str, hint: str | None = None):
        self.expected = expected
        self.actual = actual
        super().__init__(f"SHA-256 mismatch: SHA256SUMS expects {expected}, the shard has {actual}", file=file, hint=hint)


@dataclass
class Problems:
    """Collects what a read found wrong with single samples, to report it once, at the end.

    With `strict=True` (the default), a bad sample raises `ReleaseError`. With `strict=False`
    the sample is skipped and counted. Notes (kept samples that have something worth knowing,
    such as an identity name that could not be split) are counted in both modes. Each sample's
    detail is logged at debug level only; `log_summary` logs, per kind, the count and the first
    few samples with their detail (`SUMMARY_EXAMPLES`).
    """

    strict: bool = True
    skipped: Counter = field(default_factory=Counter)
    noted: Counter = field(default_factory=Counter)
    # (verb, kind) -> the first few messages of that kind, each naming its file and sample
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def bad_sample(self, kind: str, message: str, *, file: str, key: str | None) -> None:
        if self.strict:
            raise ReleaseError(message, file=file, key=key, hint=_LENIENT_HINT)
        self.skipped[kind] += 1
        self._keep("skipped", kind, ReleaseError(message, file=file, key=key))

    def note(self, kind: str, message: str, *, file: str, key: str | None) -> None:
        self.noted[kind] += 1
        self._keep("noted", kind, ReleaseError(message, file=file, key=key))

    def _keep(self, verb: str, kind: str, error: ReleaseError) -> None:
        logger.debug("%s a sample (%s): %s", verb, kind, error)
        examples = self.examples.setdefault((verb, kind), [])
        if len(examples) < SUMMARY_EXAMPLES:
            examples.append(str(error))

    def summary(self) -> str:
        parts = [f"{n} skipped ({kind})" for kind, n in sorted(self.skipped.items())]
        parts += [f"{n} noted ({kind})" for kind, n in sorted(self.noted.items())]
        return ", ".join(parts) or "no problems"

    def summary_lines(self, scope: str) -> list[str]:
        """The counts in one line, then one line per kind with its first few samples."""
        if not (self.skipped or self.noted):
            return []
        lines = [f"{scope}: {self.summary()}"]
        for verb, counts in (("skipped", self.skipped), ("noted", self.noted)):
            for kind, n in sorted(counts.items()):
                examples = self.examples.get((verb, kind), [])
                what = "a sample" if n == 1 else f"{n:,} samples"
                first = "" if n == 1 else f"; the first {len(examples)}"
                lines.append(f"{scope}: {verb} {what} ({kind}){first}: " + " | ".join(examples))
        return lines

    def log_summary(self, scope: str) -> None:
        """Log `summary_lines` as warnings on the `reghead` logger (nothing when there is nothing)."""
        for line in self.summary_lines(scope):
            logger.warning("%s", line)


_LENIENT_HINT = "Re-download the shard; to skip such samples instead, read with strict=False"
