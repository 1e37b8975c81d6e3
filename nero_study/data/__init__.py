"""Data sets that ship with installed packages (no downloads): the proxy tasks' real data."""

from nero_study.data.digits import DIGITS_SPLIT_SEED, DigitsSplit, load_digits_split

__all__ = ["DIGITS_SPLIT_SEED", "DigitsSplit", "load_digits_split"]
