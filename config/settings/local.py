"""Settings for `make run` on one machine: the embedded default."""
from ._secret import secret_key_for
from .base import *  # noqa: F401,F403
from .base import DATA_DIR, env_bool

SECRET_KEY = secret_key_for(DATA_DIR)
DEBUG = env_bool("DJANGO_DEBUG", True)
