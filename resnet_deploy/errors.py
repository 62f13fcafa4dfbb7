"""Exceptions the CLI turns into exit codes: 2 for bad input or usage, 1 for a failed gate."""


class ResnetDeployError(Exception):
    """Bad input, a bad file or an unusable environment; the CLI exits 2 with this message."""

    exit_code = 2


class DataError(ResnetDeployError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class CheckpointError(ResnetDeployError):
    """A checkpoint cannot be loaded safely or does not match its model."""


class ArtifactError(ResnetDeployError):
    """An ONNX file, calibration cache, engine or sidecar is malformed or incompatible."""


class GateFailed(ResnetDeployError):
    """An accuracy or latency gate failed; the CLI exits 1."""

    exit_code = 1
