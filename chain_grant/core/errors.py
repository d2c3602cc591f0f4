"""The one exception type chain rules raise: an OAuth error code plus a description."""


class ChainError(Exception):
    """A chain rule refused a request. ``error`` is the OAuth error code to answer with
    (``invalid_grant`` unless said otherwise); ``description`` is safe to show the client."""

    def __init__(self, description: str, error: str = "invalid_grant"):
        super().__init__(description)
        self.description = description
        self.error = error
