"""The exceptions segtool raises for problems a user can fix, and the check of a choice."""

from __future__ import annotations

from collections.abc import Iterable


class SegtoolError(Exception):
    """A problem with the user's input or options.

    The message is one line that names the file, the value and the fix; the command line
    prints it in red and exits with code 1.
    """


class InvalidInputError(SegtoolError):
    """One or more input files are malformed; `problems` lists them all (file: what: fix)."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{summary}: {shown}{more}")


def check_choice(option: str, value: str, choices: Iterable[str]) -> None:
    """Refuse a value that is not one of an option's choices, listing them.

    Args:
        option: the option's name without dashes (``loss``, ``augment``...).
        value: what the user gave.
        choices: the valid values, in the order the help shows them.

    Raises:
        SegtoolError: ``--OPTION 'value' is not one of a, b, c``.
    """
    choices = list(choices)
    if value not in choices:
        raise SegtoolError(f"--{option} {value!r} is not one of {', '.join(choices)}")
