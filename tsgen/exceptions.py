"""Warnings and errors raised by tsgen."""


class ConvergenceWarning(UserWarning):
    """An iterative fit (EM, MLE, SGD) stopped before meeting its tolerance."""


class TrainingDivergedError(RuntimeError):
    """The training loss, a gradient or a parameter became NaN or infinite; the model would be garbage."""


class TrainingDivergenceWarning(UserWarning):
    """The training loss exploded (rose far above its best) without becoming NaN: training is unstable."""


class NumericalError(ArithmeticError, ValueError):
    """A covariance lost positive definiteness or a recursion produced NaN."""


class InsufficientDataWarning(UserWarning):
    """A model was fitted on less data than it needs to learn its parameters: its forecasts may be poor."""
