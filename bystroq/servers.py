"""Kept for imports written before `bystroq.beanstalk`: the same names, from there."""

from bystroq.beanstalk import *  # noqa: F403
from bystroq.beanstalk import __all__  # noqa: F401
