"""The tasks' data: loaders of each data set's standard on-disk format (the proxy tasks' data ships with
installed packages), and :mod:`nero_study.datasets`, the verified download of the paper tasks' data sets."""

from nero_study.data.digits import DIGITS_SPLIT_SEED, DigitsSplit, load_digits_split

__all__ = ["DIGITS_SPLIT_SEED", "DigitsSplit", "load_digits_split"]
