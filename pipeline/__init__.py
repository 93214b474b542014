"""The pipeline's stages (``python -m pipeline.<stage>``) and the pieces they share."""

import atexit
import gc

# At exit, the objects still alive are frozen (moved out of the garbage collector's reach)
# before the interpreter's own teardown, whose full collections would otherwise walk them
# all: after TensorFlow and Keras are imported, about 0.8 s of every stage's exit here, for
# memory the process is about to hand back anyway. Only cycles are left to the OS this way:
# objects without cycles are still freed (and files closed) by their reference counts, and
# Python never promised `__del__` for what is alive at exit (the data model's `__del__`).
atexit.register(gc.freeze)
