"""The one error the data layer raises."""


class DataError(RuntimeError):
    """MNIST is missing or bad; the message names the file and what to do."""
