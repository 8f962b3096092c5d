"""The weights package's error type, in a module without heavy imports (``list weights`` must not import torch)."""
from rs_transfer.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be read or mapped; the message says which file and what to do."""
