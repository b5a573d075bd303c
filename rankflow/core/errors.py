"""The one exception tree of rankflow.

Every error rankflow raises on purpose derives from :class:`RankflowError` and says what is wrong
and how to fix it, in one line. ``exit_code`` is what the CLI exits with: 2 for bad input or
usage (:class:`InputError`: a malformed spec or log, a wrong parameter, a bad request, a missing
file), 1 for a failure of the machinery (an artifact that isn't what was written, a server that
won't start, a deploy that can't finish).

The classes keep the names they had and, as a second base, the built-in they used to be
(``ValueError``, ``RuntimeError``), so code that caught those still catches them.
"""

from __future__ import annotations


class RankflowError(Exception):
    """Root of every rankflow error."""

    #: What the CLI exits with when this error ends a command.
    exit_code = 1


class InputError(RankflowError):
    """The input is wrong (data, spec, parameters, a request, a path): fix it and rerun."""

    exit_code = 2


class UsageError(InputError, ValueError):
    """A command line or a pipeline parameter that can't be used as given."""


class ConfigError(InputError, ValueError):
    """A step's configuration value is out of range or malformed."""


class SpecError(InputError, ValueError):
    """The dataset spec itself is malformed."""


class DataValidationError(InputError, ValueError):
    """The raw log does not satisfy its dataset spec."""


class ScoringError(InputError, ValueError):
    """The rows sent for scoring don't match what the endpoint expects."""


class MissingArtifactError(InputError, FileNotFoundError):
    """A file or artifact that should be there is not (a path given wrongly, a step not run)."""


class EvaluationError(RankflowError, ValueError):
    """Predictions and labels can't be scored against each other (lengths, alignment, values)."""


class IntegrityError(RankflowError, RuntimeError):
    """An artifact is not the one that was written: the message names the files that differ."""


class NotCompilable(RankflowError, ValueError):
    """The workflow uses an op (or an op option) the compiled transform doesn't reproduce
    exactly; callers fall back to NVTabular's own transform."""


class ExportError(RankflowError, RuntimeError):
    """The workflow and the model can't be exported as an endpoint; the message says why."""


class TritonError(RankflowError, RuntimeError):
    """The local Triton server could not be started, or did not become ready."""


class StoreError(RankflowError, RuntimeError):
    """The model store or a repository to publish is not what it should be."""


class DeployError(RankflowError, RuntimeError):
    """A version could not be deployed or rolled back; the store serves what it served before."""


class ClientError(RankflowError, RuntimeError):
    """The server could not be reached, or refused the request; the message says which."""


class ClientInputError(ClientError, InputError):
    """The rows given to the client can't be sent: a missing file, column or type."""


class StepFailed(RankflowError):
    """A pipeline step failed; carries the step's own error (see :mod:`rankflow.core.steps`)."""

    def __init__(self, step: str, message: str, *, error: str, exit_code: int, log: str) -> None:
        super().__init__(f"{step}: {message} (log: {log})")
        self.step = step
        self.message = message
        self.error = error
        self.exit_code = exit_code
        self.log = log
