"""The two exceptions of ``cxr_utils.data``, shared by all its modules.
Explained in notebooks/01_data_collection.
"""


class DatasetError(ValueError):
    """The dataset folder, an image file or a table cannot be used; the message names it and the fix.

    Raised for one image file, it also carries that file as ``path`` and what is wrong with it as
    ``reason`` (without the path and the dataset's fix), which a list of unusable files shows.
    """

    def __init__(self, message: str, *, path=None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.reason = reason


class DatasetWarning(UserWarning):
    """Something was left out or guessed; the data are still usable."""
