"""Subtask 2 explanations (docs/design.md): the Task 1 answer, self-probing text, grounding boxes, an occlusion heatmap
and a calibrated confidence per val row.

    runner      the fine-tuned model through ms-swift's TransformersEngine, exactly as inference.predict runs it
    probing     topic -> auxiliary questions; a composer that quotes only the model's own answers
    grounding   Qwen2.5-VL bbox prompt, JSON parsing, resized -> original coordinates, clipping, IoU
    heatmap     occlusion grid -> upsampled map -> PNG overlay of the image's size
    confidence  raw scores from token log-probs, correctness, temperature / isotonic calibration, ECE / Brier / NLL
    pipeline    one row end to end; evaluation against synthetic geometry
Imports point backwards only (common, data_prep, inference); submission.task2 drives it.
"""
