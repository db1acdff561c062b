"""Exception tree shared by every driver: DriverError > DriverConnectionError, ..."""


class DriverError(Exception):
    """Base class of every error a driver raises."""


class DriverConnectionError(DriverError):
    """The device is absent, unplugged, refused the connection or stopped answering."""


class DriverTimeoutError(DriverConnectionError):
    """The device did not answer in time."""


class DriverProtocolError(DriverError):
    """The device answered, but with something the protocol does not allow."""


class MissingDependencyError(DriverError):
    """An optional hardware library is not installed; the message names the package."""

    def __init__(self, package: str, feature: str, hint: str | None = None) -> None:
        super().__init__(f"{feature} needs {package!r}; {hint or f'install it: uv add {package}'}")
        self.package = package
        self.feature = feature
