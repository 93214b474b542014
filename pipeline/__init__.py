"""The pipeline's stages (``python -m pipeline.<stage>``) and the pieces they share."""
