"""One exception type for problems a user can fix (bad config, unknown name, missing model).

The CLI prints these as a single line instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""
