"""How Qwen2.5-VL's processor sizes an image: shared by the data stats and the Subtask 2 box mapping."""
from __future__ import annotations

import math

FACTOR = 28                      # patch 14 x spatial merge 2: one image token per 28 x 28 pixels
MIN_PIXELS = 56 * 56
MAX_PIXELS = 14 * 14 * 4 * 1280  # the processor's default cap (1280 image tokens)


def smart_resize(height: int, width: int, max_pixels: int = MAX_PIXELS, *, factor: int = FACTOR,
                 min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """(height, width) the processor resizes an image to: each side rounded to a multiple of `factor`, then scaled
    down (floor) or up (ceil), keeping the aspect ratio, until the pixel count fits [min_pixels, max_pixels].
    Same rule as qwen_vl_utils.smart_resize, except that a side never becomes 0 (it keeps one `factor`)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def image_tokens(width: int, height: int, max_pixels: int = MAX_PIXELS) -> int:
    """Image tokens the language model sees for one image of this size."""
    h, w = smart_resize(height, width, max_pixels)
    return (h // FACTOR) * (w // FACTOR)


# ms-swift turns MAX_PIXELS into IMAGE_MAX_TOKEN_NUM (and MIN_PIXELS into IMAGE_MIN_TOKEN_NUM) in os.environ the first
# time it loads a Qwen-VL processor, and from then on the token count wins over MAX_PIXELS, in this process and in
# every child that inherits the environment. It also copies the budget into qwen_vl_utils' module constants, which
# resize every image, once per process (patch_qwen_vl_utils, guarded by `vision_process._patch`).
DERIVED_TOKEN_VARS = ('IMAGE_MAX_TOKEN_NUM', 'IMAGE_MIN_TOKEN_NUM')


def use_image_budget(max_pixels: int | None, env=None) -> None:
    """Set MAX_PIXELS for ms-swift in `env` (default os.environ) and drop token counts derived from an earlier value;
    in this process, the next processor ms-swift loads copies the new budget into qwen_vl_utils again."""
    import os
    import sys
    this_process = env is None
    env = os.environ if env is None else env
    if max_pixels:
        env['MAX_PIXELS'] = str(int(max_pixels))
        for name in DERIVED_TOKEN_VARS:
            env.pop(name, None)
        vision_process = sys.modules.get('qwen_vl_utils.vision_process')
        if this_process and vision_process is not None and hasattr(vision_process, '_patch'):
            del vision_process._patch   # else a second model in this process keeps the first one's budget
