"""Evaluation: recall@k under the multi-caption protocol, retrieval over embedded pairs or through an
index's search, and zero-shot classification. Imports inference, models, data and the shared modules."""
