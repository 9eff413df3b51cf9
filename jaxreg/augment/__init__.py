"""Data augmentation: images (on dm_pix), 1-D signals, text tokens, audio, mixing, pipelines.

Every function takes a key first and a *batch* (leading example axis) and
gives each example its own randomness.
"""

from jaxreg.augment import audio as audio
from jaxreg.augment import image as image
from jaxreg.augment import mix as mix
from jaxreg.augment import signal as signal
from jaxreg.augment import text as text
from jaxreg.augment.compose import Stage as Stage
from jaxreg.augment.compose import compose as compose
from jaxreg.augment.mix import cutmix as cutmix
from jaxreg.augment.mix import cutout as cutout
from jaxreg.augment.mix import mixup as mixup
