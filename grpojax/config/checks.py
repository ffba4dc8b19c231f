"""Validation helpers of the config dataclasses: a failed check raises :class:`Invalid` with the dotted key
relative to the dataclass being built; ``grpojax.config.io`` turns it into a ``UserError`` naming the file
and the full key."""


class Invalid(Exception):
    """A field failed validation; ``key`` is the dotted path relative to the dataclass being built."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise Invalid(key, message)


def positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        check(v is None or v > 0, n, f"must be > 0, got {v}")


def non_negative(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        check(v is None or v >= 0, n, f"must be >= 0, got {v}")
