"""The exceptions segtool raises for problems a user can fix."""


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
