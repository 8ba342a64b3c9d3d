"""Run the fine-tuned model exactly as Task 1 does, for everything Subtask 2 needs beyond the answer.

The engine is ms-swift's TransformersEngine built like `inference.backends` builds it (same model_type/template,
MAX_PIXELS from the environment), so prompts, image resizing and greedy decoding are the ones that produced the Task 1
predictions and that the model was fine-tuned with. On top of it:
- `generate`: greedy answers through `engine.infer` (probes, grounding, answers when no Task 1 file is given);
- `answer`: the same with ms-swift's token log-probs and first-token alternatives (confidence; re-generating a Task 1
  answer also checks that this model and decoding produced it);
- `answer_logprob_batch`: teacher-forced log-prob of a given answer for a batch of perturbed images (occlusion
  heatmap), encoded by the same ms-swift template.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from common.errors import InputError
from common.model_family import DEFAULT_FAMILY, family, family_of_config, family_of_swift_name
from common.qwen_vision import use_image_budget


@dataclass
class Generated:
    """A greedy answer with ms-swift's own log-probs: one per generated token, and the top alternatives (token text
    -> log-prob) at the first position (for yes/no margins)."""
    text: str
    token_logprobs: list[float]
    first_top: dict[str, float]


TOP_LOGPROBS = 20


class VLRunner:
    def __init__(self, model_dir: str | Path, *, adapters: list[str] | None = None, max_pixels: int | None = None,
                 system: str | None = None, attention: str = 'auto'):
        if not (Path(model_dir) / 'config.json').is_file():
            raise InputError('not a model folder (no config.json)', file=str(model_dir), field='--model')
        if max_pixels:
            use_image_budget(max_pixels)  # read by ms-swift's Qwen-VL resizing, as in inference
        from swift import TransformersEngine
        from inference.backends import read_model_kind
        model_type, template = read_model_kind(str(model_dir), list(adapters or []))
        self.engine = TransformersEngine(str(model_dir), adapters=adapters or None, max_batch_size=8,
                                         model_type=model_type, template_type=template)
        # the model family decides the turn-ending token and the grounding coordinates (common.model_family)
        known = family_of_swift_name(template) or family_of_swift_name(model_type) or family_of_config(model_dir)
        self.family = known.name if known else DEFAULT_FAMILY
        from inference.fast_attention import use_attention
        use_attention(self.engine.model, attention)  # as inference.predict does, so both give the same answers
        self.model, self.template = self.engine.model, self.engine.template
        self.tokenizer = self.template.processor.tokenizer
        self.eos_id = self.tokenizer.convert_tokens_to_ids(family(self.family).end_of_turn)
        self.device = next(self.model.parameters()).device
        self.system = system  # a training-time system prompt (as in the ms-swift lines), else the template default

    def _request(self, image: Image.Image, question: str):
        from swift import InferRequest
        messages = [{'role': 'system', 'content': self.system}] if self.system else []
        messages.append({'role': 'user', 'content': '<image>' + question})
        return InferRequest(messages=messages, images=[image])

    def resized_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) of the image as the model saw it: what Qwen2.5-VL grounding coordinates refer to. Qwen
        templates resize per image (the patch grid tells the size); Gemma 3 always resizes to its processor's size."""
        enc = self.template.encode(self._request(image, ''))
        processor = self.template.processor.image_processor
        if 'image_grid_thw' not in enc:
            return int(processor.size['width']), int(processor.size['height'])
        _, gh, gw = [int(v) for v in enc['image_grid_thw'][0]]
        return gw * processor.patch_size, gh * processor.patch_size

    # ---------------------------------------------------------------- generation
    def generate(self, image: Image.Image, question: str, max_new_tokens: int = 64) -> str:
        """Greedy answer text, exactly as inference.predict writes `prediction`."""
        return self.answer(image, question, max_new_tokens, logprobs=False).text

    def answer(self, image: Image.Image, question: str, max_new_tokens: int = 64, logprobs: bool = True) -> Generated:
        from swift import RequestConfig
        config = RequestConfig(max_tokens=max_new_tokens, temperature=0, logprobs=logprobs,
                               top_logprobs=TOP_LOGPROBS if logprobs else None)
        resp = self.engine.infer([self._request(image, question)], config, use_tqdm=False)[0]
        if isinstance(resp, Exception):
            raise resp
        choice = resp.choices[0]
        content = ((choice.logprobs or {}).get('content') or []) if logprobs else []
        first = {}
        if content:
            for alt in content[0].get('top_logprobs') or []:
                first[alt['token']] = max(first.get(alt['token'], -math.inf), float(alt['logprob']))
        return Generated(choice.message.content or '', [float(c['logprob']) for c in content], first)

    # ---------------------------------------------------------------- scoring
    def _answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)['input_ids'] + [self.eos_id]

    @torch.no_grad()
    def answer_logprob_batch(self, images: list[Image.Image], question: str, answer: str,
                             batch_size: int = 8) -> list[float]:
        """Summed log-prob of the answer tokens for each image (the occlusion signal); an empty answer is scored by
        its end-of-turn token."""
        ids = self._answer_ids(answer)
        ids = ids[:-1] or ids
        target = torch.tensor(ids, device=self.device)
        out: list[float] = []
        for i in range(0, len(images), batch_size):
            logp = self._answer_logprobs(images[i:i + batch_size], question, ids)
            picked = logp.gather(2, target[None, :, None].expand(len(logp), -1, 1))[..., 0]
            out += picked.sum(-1).float().cpu().tolist()
        return out

    def _answer_logprobs(self, images, question, ids) -> torch.Tensor:
        """[batch, len(ids), vocab] log-probs at the positions that predict each answer token."""
        encoded = []
        for im in images:
            enc = self.template.encode(self._request(im, question))
            enc['input_ids'] = list(enc['input_ids']) + list(ids)
            for key in ('mm_token_type_ids', 'token_type_ids'):   # Qwen's / Gemma's: answer tokens are text (0)
                if key in enc:
                    enc[key] = list(enc[key]) + [0] * len(ids)
            enc.pop('labels', None)
            encoded.append(enc)
        lengths = {len(e['input_ids']) for e in encoded}
        if len(lengths) != 1:  # perturbed copies of one image always encode to the same length
            raise RuntimeError(f'batch of different prompt lengths {sorted(lengths)}')
        batch = self.template.data_collator(encoded)
        batch = {k: v.to(self.device) if hasattr(v, 'to') else v for k, v in batch.items() if k != 'labels'}
        logits = self.model(**batch).logits
        n = len(ids)
        return torch.log_softmax(logits[:, -n - 1:-1].float(), -1)
