"""The local server's own error, importable without the serving stack (the CLI names it)."""


class ServerError(RuntimeError):
    """The bundled tritonserver cannot start here, or stopped on its own."""
