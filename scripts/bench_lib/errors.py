"""The one error of the benchmark, kept apart so that parts without a rig can raise it."""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message is one line for the user."""
