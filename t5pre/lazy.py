"""Heavy imports on first use: ``import t5pre`` and ``t5pre --help`` never load TensorFlow, and
a wrong flag is reported before TensorFlow's start-up (see ``t5pre.cli``)."""


def tensorflow():
    """The ``tensorflow`` module, imported when first needed."""
    import tensorflow as tf

    return tf
