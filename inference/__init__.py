"""Inference: answer prepared ms-swift JSONL with a model (vLLM or ms-swift transformers), resumable, data-parallel."""
