"""Data: image-caption pairs from files, folders and datasets, and how an image is decoded and
preprocessed for a model. Imports only tinymvlm's shared modules (errors, atomic, options, image_files)."""
