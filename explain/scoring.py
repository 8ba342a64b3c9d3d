"""Teacher-forced scoring of a fixed answer: the log-prob the model gives each answer token after the prompt, with no
generation (the occlusion heatmap re-scores the Task 1 answer under every occluded image; the unoccluded pass also
gives the confidence inputs when the Task 1 file has no log-probs).

    ScoreItem           one (image, question, answer) to score; `view` turns the opened image into the scored one
                        (an occluded and/or downscaled copy), so images are made where they are encoded
    Scored              token_logprobs (the answer's tokens, then the end-of-turn token: <|im_end|> for Qwen,
                        <end_of_turn> for Gemma 3), first_top (position 0's top-k
                        alternatives, token text -> log-prob) and greedy (per position: the given token is the argmax)
    TransformersScorer  batched forward passes on ms-swift's TransformersEngine model and template (left padding,
                        logits only at the answer positions); prompts encoded in DataLoader workers on a GPU
    VllmScorer          vLLM prompt log-probs through ms-swift's VllmEngine: prompt = template prompt + answer +
                        <|im_end|>, max_tokens 1 (written from vLLM 0.26's and ms-swift's sources; measured on the GPU)

The answer is tokenized from its text as ms-swift's template tokenizes a response (tokenizer(answer), no special
tokens), the same ids for both scorers; an empty answer is scored by its <|im_end|>.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from PIL import Image

from common.model_family import family_of_swift_name

EOS_TOKEN = '<|im_end|>'   # Qwen's; each scorer uses its template family's own (end_of_turn)


def end_of_turn(template) -> str:
    """The token that closes an assistant turn in this ms-swift template's family: <|im_end|> for Qwen-VL,
    <end_of_turn> for Gemma 3 (common.model_family); Qwen's for a template of no known family."""
    known = family_of_swift_name(getattr(template.template_meta, 'template_type', None))
    return known.end_of_turn if known else EOS_TOKEN


@dataclass
class ScoreItem:
    image: str | Image.Image
    question: str
    answer: str
    top_k: int = 0                                   # alternatives to keep at the answer's first position
    view: Callable[[Image.Image], Image.Image] | None = None

    def load(self) -> Image.Image:
        if isinstance(self.image, Image.Image):
            image = self.image.convert('RGB')
        else:
            with Image.open(self.image) as im:
                image = im.convert('RGB')
        return self.view(image) if self.view else image


@dataclass
class Scored:
    token_logprobs: list[float]          # len(answer ids) + 1: the answer's tokens, then <|im_end|>
    greedy: list[bool]                   # per position: the given token is the model's top choice
    first_top: dict[str, float] = field(default_factory=dict)

    @property
    def answer_logprob(self) -> float:
        """Summed log-prob of the answer's tokens (the occlusion signal); an empty answer: its <|im_end|>."""
        body = self.token_logprobs[:-1]
        return float(sum(body)) if body else float(self.token_logprobs[-1])


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(answer, add_special_tokens=False)['input_ids']


def messages_for(question: str, system: str | None) -> list[dict]:
    messages = [{'role': 'system', 'content': system}] if system else []
    return messages + [{'role': 'user', 'content': '<image>' + question}]


def _top(logprobs: dict[int, float], k: int, tokenizer) -> dict[str, float]:
    """The k most likely tokens as text -> log-prob (the largest per text), as ms-swift reports alternatives."""
    out: dict[str, float] = {}
    for token_id, lp in sorted(logprobs.items(), key=lambda kv: -kv[1])[:k]:
        if lp == -math.inf:
            continue
        text = tokenizer.decode(token_id)
        out[text] = max(out.get(text, -math.inf), float(lp))
    return out


class Scorer:
    """Interface: score items in order. `score_iter` yields (index, Scored) as batches finish, in item order."""
    batch_size = 8

    def score_iter(self, items: Sequence[ScoreItem]) -> Iterator[tuple[int, Scored]]:
        raise NotImplementedError

    def score(self, items: Sequence[ScoreItem]) -> list[Scored]:
        return [s for _, s in self.score_iter(items)]


class _Encoded:
    """Dataset for the DataLoader: item i -> (i, template-encoded prompt + answer ids, answer ids)."""

    def __init__(self, scorer: 'TransformersScorer', items: Sequence[ScoreItem]):
        self.scorer, self.items = scorer, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return (i, *self.scorer.encode(self.items[i]))


class TransformersScorer(Scorer):
    """One forward pass per batch on the engine's own model and template: exactly the encoding the engine generates
    with, plus the answer ids appended. Left padding (the template's inference collator) aligns every row's end, so
    `logits_to_keep` computes the vocabulary projection only at the answer positions."""

    def __init__(self, engine, system: str | None = None, batch_size: int = 8, encode_workers: int = 0):
        self.engine, self.model, self.template = engine, engine.model, engine.template
        self.tokenizer = self.template.tokenizer
        self.eos_id = self.tokenizer.convert_tokens_to_ids(end_of_turn(self.template))
        self.system, self.batch_size, self.encode_workers = system, batch_size, encode_workers
        self.device = next(self.model.parameters()).device

    def encode(self, item: ScoreItem) -> tuple[dict, list[int]]:
        from swift import InferRequest
        ids = answer_ids(self.tokenizer, item.answer)
        enc = self.template.encode(InferRequest(messages=messages_for(item.question, self.system),
                                                images=[item.load()]))
        enc['input_ids'] = list(enc['input_ids']) + ids
        for key in ('mm_token_type_ids', 'token_type_ids'):   # Qwen's / Gemma 3's: the answer tokens are text (0)
            if enc.get(key) is not None:
                enc[key] = list(enc[key]) + [0] * len(ids)
        for key in [k for k in enc if k.endswith('labels') or k.endswith('loss_scale')]:
            enc.pop(key)
        return enc, ids

    def score_iter(self, items: Sequence[ScoreItem]) -> Iterator[tuple[int, Scored]]:
        import torch
        # fork: the workers inherit the template (never pickled) and only encode on the CPU
        extra = {'multiprocessing_context': 'fork'} if self.encode_workers else {}
        loader = torch.utils.data.DataLoader(_Encoded(self, items), batch_size=self.batch_size, shuffle=False,
                                             collate_fn=list, num_workers=self.encode_workers, **extra)
        for batch in loader:
            yield from zip([b[0] for b in batch], self._forward([b[1] for b in batch], [b[2] for b in batch],
                                                               [items[b[0]].top_k for b in batch]))

    def _forward(self, encoded: list[dict], ids: list[list[int]], top_ks: list[int]) -> list[Scored]:
        import torch
        keep = max(len(i) for i in ids) + 1
        batch = self.template.data_collator(encoded)
        batch = {k: v.to(self.device) if hasattr(v, 'to') else v for k, v in batch.items() if k != 'labels'}
        with torch.inference_mode():
            logits = self.model(**batch, logits_to_keep=keep).logits
            logp = torch.log_softmax(logits.float(), -1)          # [batch, keep, vocab]
            out = []
            for row, (answer, k) in enumerate(zip(ids, top_ks)):
                targets = torch.tensor(answer + [self.eos_id], device=logp.device)
                rows = logp[row, keep - len(targets):]               # position j predicts targets[j]
                picked = rows.gather(1, targets[:, None])[:, 0]
                greedy = rows.argmax(-1) == targets
                first = {}
                if k:
                    values, indices = rows[0].topk(k)
                    first = _top(dict(zip(indices.tolist(), values.tolist())), k, self.tokenizer)
                out.append(Scored(picked.tolist(), greedy.tolist(), first))
        return out


class VllmScorer(Scorer):
    """vLLM prompt log-probs: the answer (+ <|im_end|>) is the end of the prompt, one token is generated and
    dropped. vLLM reports, at every prompt position, the given token's log-prob and rank plus the top-k (0 = the
    given token only); prompt log-prob requests skip vLLM's prefix cache. Items go to the engine `batch_size` at a
    time (vLLM schedules them itself), split by top_k because the request config is per call."""

    def __init__(self, engine, system: str | None = None, batch_size: int = 512):
        self.engine, self.template = engine, engine.template
        self.tokenizer = self.template.tokenizer
        self.eos_token = end_of_turn(self.template)
        self.eos_id = self.tokenizer.convert_tokens_to_ids(self.eos_token)
        self.system, self.batch_size = system, batch_size

    def score_iter(self, items: Sequence[ScoreItem]) -> Iterator[tuple[int, Scored]]:
        for start in range(0, len(items), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(items))))
            done: dict[int, Scored] = {}
            for k in sorted({items[i].top_k for i in chunk}):
                part = [i for i in chunk if items[i].top_k == k]
                done.update(zip(part, self._score([items[i] for i in part], k)))
            yield from ((i, done[i]) for i in chunk)

    def _score(self, items: list[ScoreItem], top_k: int) -> list[Scored]:
        from concurrent.futures import ThreadPoolExecutor
        from swift import InferRequest, RequestConfig
        with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool:   # decoding and drawing release the GIL
            images = list(pool.map(ScoreItem.load, items))
        requests, targets = [], []
        for item, image in zip(items, images):
            ids = answer_ids(self.tokenizer, item.answer) + [self.eos_id]
            targets.append(ids)
            messages = messages_for(item.question, self.system)
            messages.append({'role': 'assistant', 'content': item.answer + self.eos_token})
            requests.append(InferRequest(messages=messages, images=[image]))
        config = RequestConfig(max_tokens=1, temperature=0, prompt_logprobs=top_k, return_details=True)
        responses = self.engine.infer(requests, config, use_tqdm=False)
        out = []
        for response, ids in zip(responses, targets):
            if isinstance(response, Exception):
                raise response
            tail = list(response.prompt_token_ids or [])[-len(ids):]
            if tail != ids:
                raise RuntimeError(f'the template encoded the answer as {tail}, expected {ids}')
            positions = response.prompt_logprobs[-len(ids):]
            given = [pos[str(t)] for pos, t in zip(positions, ids)]
            first = {}
            if top_k:
                first = _top({int(t): v['logprob'] for t, v in positions[0].items()}, top_k, self.tokenizer)
            out.append(Scored([float(g['logprob']) for g in given], [g.get('rank') == 1 for g in given], first))
        return out
