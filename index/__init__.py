"""FAISS indexing and search of image folders and captions (tinymvlm.index)."""
