"""The two exceptions of ``cxr_utils.data``, defined once and shared by all its modules.

``DatasetError`` is a ``ValueError`` whose message names the file or folder and the fix;
``DatasetWarning`` reports what was left out or guessed. Explained in
notebooks/01_data_collection.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """The dataset folder, an image file or a table cannot be used; the message says how to fix it."""


class DatasetWarning(UserWarning):
    """Something was left out or guessed; the data are still usable."""
