"""Exceptions raised by jaxssl for bad input. Each message says what is wrong and how to fix it."""


class JaxsslError(Exception):
  """Base class of every error that jaxssl raises on purpose."""


class ConfigError(JaxsslError, ValueError):
  """A configuration value (or a function argument) is invalid. Raised before compilation."""


class DataError(JaxsslError, ValueError):
  """A dataset is missing, corrupt, or does not match what the model expects."""


class CheckpointError(JaxsslError, RuntimeError):
  """A checkpoint is missing, partial, corrupt, or belongs to a different model."""


class NumericalError(JaxsslError, FloatingPointError):
  """Training produced a NaN or Inf (loss or gradient)."""
