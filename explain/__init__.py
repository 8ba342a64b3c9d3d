"""Subtask 2 explanations (docs/design.md), stage by stage over all val rows: the Task 1 answer as it is, self-probing
text, grounding boxes, an occlusion heatmap and a calibrated confidence.

    stages      the stages over all rows (probes, grounding, occlusion, confidence, calibration, visuals) + assembly;
                model stages run data-parallel over the visible GPUs; resumable (work)
    work        the work folder: one file per stage, rows appended as they finish, merged in input order
    scoring     teacher-forced log-probs of a fixed answer: a batched transformers forward or vLLM prompt log-probs
    probing     topic -> auxiliary questions
    narrative   probe answers -> the clinician-oriented text (clinical terms, every sentence with its source); the
                optional rewrite by the same model and the check that it adds no claim
    grounding   Qwen2.5-VL bbox prompt, JSON parsing, resized -> original coordinates, clipping, IoU
    heatmap     occlusion views -> cells; hot regions named in the dataset's position words; one scale for all rows;
                cheaper-map agreement
    visuals     the pictures: untouched frame, heatmap on the shared scale with outlined regions, drawn boxes,
                colour bar
    confidence  raw scores from token log-probs, correctness, stratified calibration sample, temperature / isotonic
                calibration, ECE / Brier / NLL
    pipeline    what a row's entry says (box and heatmap entries, the justification); evaluation against synthetic
                geometry
    ask         one image and question (`make ask EXPLAIN=1`): the answer, then these stages over that one row
Generation runs on inference.backends (the Task 1 engine and decoding). Imports point backwards only (common,
data_prep, inference); submission.task2 drives it over the val set, explain.ask over one question.
"""
