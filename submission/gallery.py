"""What a rater opens: a gallery of rows in the submission's README.md (the hub renders it) and report/index.html with
every row, filterable by question topic and confidence level. Both show, per row, the untouched frame, the model's
grounding boxes drawn with their labels, the occlusion heatmap with its colour bar (one scale for every row), the
question, answer, explanation and confidence. The page has no external asset (inline style and script, images by
relative path), so it works offline from the folder.
"""
from __future__ import annotations

import html
from pathlib import Path

from common.io import atomic_open
from explain.narrative import CERTAINTY_LEVELS
from explain.visuals import SCALE_FILE

GALLERY_ROWS = 20
INDEX = 'report/index.html'
SCALE = f'visuals/{SCALE_FILE}'


def cards(lines: list[dict], audit: list[dict]) -> list[dict]:
    """One record per row with everything a gallery shows (submission line + its audit entry)."""
    by_id = {a['val_id']: a for a in audit}
    return [{**line, **{k: by_id[line['val_id']][k] for k in (
        'question_class', 'certainty', 'frame', 'heatmap_image', 'box_image', 'heatmap_changed', 'heatmap_regions',
        'box_mass_share', 'box_area_share', 'grounding_target')}} for line in lines]


def pick(rows: list[dict], n: int = GALLERY_ROWS) -> list[dict]:
    """Up to n rows spread over (question topic, confidence level): one row from each pair in turn (topics
    alphabetically, levels low to very high), lowest val_id first, until n are taken; returned by val_id."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in sorted(rows, key=lambda r: r['val_id']):
        groups.setdefault((r['question_class'], CERTAINTY_LEVELS.index(r['certainty'])), []).append(r)
    order = sorted(groups)
    picked: list[dict] = []
    depth = 0
    while len(picked) < min(n, len(rows)):
        for key in order:
            if depth < len(groups[key]) and len(picked) < n:
                picked.append(groups[key][depth])
        depth += 1
    return sorted(picked, key=lambda r: r['val_id'])


def _md(text: str) -> str:
    """Text safe in markdown: HTML escaped, markdown's markup characters escaped, one line."""
    out = html.escape(' '.join(str(text).split()), quote=False)
    for ch in '\\`*_[]|#':
        out = out.replace(ch, '\\' + ch)
    return out


def _pct(share) -> str:
    return '—' if share is None else f'{100 * share:.0f} %'


def _box_note(r: dict) -> str:
    if not r['box_image']:
        return 'no box'
    return f'heat inside the box: {_pct(r["box_mass_share"])}' if r['box_mass_share'] is not None \
        else 'heat inside the box: — (no region changed the answer)'


def readme_section(rows: list[dict], picked: list[dict]) -> str:
    """The README's gallery: a short key, then per picked row its pictures in one table row and its texts."""
    classes = sorted({r['question_class'] for r in rows})
    out = [f'## Gallery: {len(picked)} of {len(rows)} rows', '',
           f'Chosen across the question topics ({", ".join(classes)}; read from the question\'s words, the val set has '
           'no question class) and the confidence levels (' + ', '.join(CERTAINTY_LEVELS) + '). Every row, '
           f'filterable by topic and confidence: [{INDEX}]({INDEX}) (open it from a local copy; it needs no '
           'network).', '',
           'Per row: the untouched frame; the box(es) the model gave when asked to locate the finding, with its '
           'label; the occlusion heatmap (tint = how much hiding that cell lowers the probability of the model\'s '
           'answer, in nats, on one scale for every row; white outlines = the regions the text names; no tint = no '
           'region changed the answer); the colour bar of that scale.', '']
    for r in picked:
        vid = r['val_id']
        box = f'![box {vid}]({r["box_image"]})' if r['box_image'] else 'no box'
        out += [f'### val_id {vid} · {r["question_class"]} · confidence {r["confidence_score"]:.2f} '
                f'({r["certainty"]})', '',
                '| frame | box | occlusion heatmap | scale |', '|---|---|---|---|',
                f'| ![frame {vid}]({r["frame"]}) | {box} | ![heatmap {vid}]({r["heatmap_image"]}) | '
                f'![colour bar]({SCALE}) |', '',
                f'- **Question:** {_md(r["question"])}',
                f'- **Answer:** {_md(r["answer"]) or "(empty)"}',
                f'- **Explanation:** {_md(r["textual_explanation"])}',
                f'- **Confidence:** {r["confidence_score"]:.2f} ({r["certainty"]}); {_box_note(r)}', '']
    return '\n'.join(out) + '\n'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: left; }
td img { width: 220px; height: auto; display: block; }
td.text { max-width: 520px; font-size: 0.92em; }
.meta { color: #555; font-size: 0.85em; }
#filters { margin: 1em 0; display: flex; gap: 1.5em; align-items: center; flex-wrap: wrap; }
tr.row.hidden { display: none; }
"""

_SCRIPT = """
(function () {
  var topic = document.getElementById('topic'), level = document.getElementById('level');
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr.row'));
  function apply() {
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!topic.value || r.dataset.topic === topic.value) && (!level.value || r.dataset.level === level.value);
      r.classList.toggle('hidden', !ok);
      if (ok) shown += 1;
    });
    document.getElementById('count').textContent = shown + ' of ' + rows.length + ' rows';
  }
  topic.addEventListener('change', apply);
  level.addEventListener('change', apply);
  apply();
})();
"""


def _img(src: str | None, alt: str) -> str:
    if not src:
        return '<span class="meta">no box</span>'
    return f'<img src="../{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">'


def index_html(name: str, rows: list[dict], summary: dict) -> str:
    """report/index.html: every row in one table, two filters (topic, confidence level) and a live row count."""
    e = html.escape
    classes = sorted({r['question_class'] for r in rows})
    heat = summary.get('heatmap') or {}
    options = lambda values: ''.join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)  # noqa: E731
    body = []
    for r in rows:
        regions = ', '.join(f'{x["name"]} {_pct(x["share"])}' for x in r['heatmap_regions'][:3]) or 'none'
        body.append(
            f'<tr class="row" id="row-{r["val_id"]}" data-topic="{e(r["question_class"])}" '
            f'data-level="{e(r["certainty"])}">'
            f'<td>{r["val_id"]}<div class="meta">{e(r["question_class"])}</div></td>'
            f'<td>{_img(r["frame"], "frame")}</td><td>{_img(r["box_image"], "box")}</td>'
            f'<td>{_img(r["heatmap_image"], "occlusion heatmap")}</td>'
            f'<td class="text"><b>Q:</b> {e(r["question"])}<br><b>A:</b> {e(r["answer"]) or "(empty)"}<br>'
            f'<b>Explanation:</b> {e(r["textual_explanation"])}<div class="meta">hot regions: {e(regions)}; '
            f'{e(_box_note(r))}</div></td>'
            f'<td>{r["confidence_score"]:.2f}<div class="meta">{e(r["certainty"])}</div></td></tr>')
    scale = (f'one scale for every row, 0 to {heat["scale_nats"]:.2f} nats; cells below {heat["min_nats"]:g} nats '
             'are not drawn' if heat.get('scale_nats') is not None else '')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(name)}: Subtask 2, every row</title>
<style>{_STYLE}</style></head><body>
<h1>{e(name)}: Subtask 2 explanations, every row</h1>
<p>{len(rows)} rows. Frame, the model's grounding box(es), the occlusion heatmap of the model's own answer
({e(scale)}), question, answer, explanation and calibrated confidence. Nothing here is drawn from ground truth.</p>
<p><img src="../{SCALE}" alt="colour bar of the heatmap scale" id="scale"></p>
<div id="filters">
<label>Question topic <select id="topic"><option value="">all</option>{options(classes)}</select></label>
<label>Confidence <select id="level"><option value="">all</option>{options(CERTAINTY_LEVELS)}</select></label>
<span id="count">{len(rows)} of {len(rows)} rows</span></div>
<table id="rows"><thead><tr><th>val_id</th><th>frame</th><th>box</th><th>occlusion heatmap</th>
<th>question, answer, explanation</th><th>confidence</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_index(folder: str | Path, name: str, rows: list[dict], summary: dict) -> Path:
    path = Path(folder) / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(index_html(name, rows, summary))
    return path
