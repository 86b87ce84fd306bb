"""The two exceptions of ``cxr_utils.data``, shared by all its modules.
Explained in notebooks/01_data_collection.
"""


class DatasetError(ValueError):
    """The dataset folder, an image file or a table cannot be used; the message names it and the fix."""


class DatasetWarning(UserWarning):
    """Something was left out or guessed; the data are still usable."""
