"""Drop-in ``torch.nn`` modules whose forward runs d2l_ext ops."""

from .loss import CrossEntropyLoss

__all__ = ["CrossEntropyLoss"]
