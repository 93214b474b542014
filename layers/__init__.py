"""Keras layers of the two-stream fusion paper (keras.ops only)."""
