"""`tx attention-dump --html FILE`: one self-contained page to explore the attention of many sentences.

Everything is inline (styles, script, data, pictures) and nothing is fetched, so the page opens
offline from file://. The page is streamed: each sentence is a `<script type="application/json"
id="tx-s-N">` block written as its record arrives and parsed by the browser only when picked; the
closing block (`id="tx-meta"`) holds what is known at the end: the shared token table every
sentence indexes into, the sentence list, alignments, gold links and AERs, training curves.

Weights are integers: round(weight * 10^precision), as many digits as the jsonl dump keeps.
A sentence block is {"i", "src", "tgt", "s": source token ids, "t": decoder-input token ids,
"sw"/"tw": word index per token (null for specials), "heads", "w": {kind: {layer: [heads*q*k ints]}}}.

DOM hooks for tests: #sentence #kind #layer #head (selects), #heatmap .cell[data-q][data-k][data-w]
(masked decoder cells: data-masked="1"), #readout[data-w], #thumbs canvas[data-head], #lines
line[data-q][data-k][data-w], #aer, #sentence-aer[data-aer]; body[data-parsed] lists the sentences parsed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from .attention import SentenceAttention, subword_word_ids


def _json_block(value) -> str:
    """JSON safe inside <script>: every '<' is escaped (it only occurs inside strings)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


class PageWriter:
    """Writes the page to a binary stream sentence by sentence; close() writes the rest."""

    def __init__(self, stream: BinaryIO, precision: int = 4, title: str = "tx attention",
                 wordpiece: bool = False, run_dir: Optional[Path] = None):
        self.stream, self.precision, self.wordpiece, self.run_dir = stream, precision, wordpiece, run_dir
        self.scale = 10 ** precision
        self.token_ids: dict[str, int] = {}
        self.sentences: list[dict] = []
        self.meta: dict = {"title": title, "precision": precision}
        self._write(HEAD.replace("%TITLE%", _html_escape(title)).replace("%STYLE%", STYLE))

    def _write(self, text: str) -> None:
        self.stream.write(text.encode("utf-8"))

    def _ids(self, tokens: list[str]) -> list[int]:
        return [self.token_ids.setdefault(t, len(self.token_ids)) for t in tokens]

    def add(self, rec: SentenceAttention) -> None:
        n = len(self.sentences)
        weights = {kind: {str(layer): np.rint(w.astype(np.float64) * self.scale).astype(np.int64).ravel().tolist()
                          for layer, w in sorted(layers.items())} for kind, layers in rec.weights.items()}
        block = {"i": rec.index, "src": rec.src, "tgt": rec.tgt, "s": self._ids(rec.src_tokens),
                 "t": self._ids(rec.tgt_tokens), "sw": subword_word_ids(rec.src_tokens, self.wordpiece),
                 "tw": subword_word_ids(rec.tgt_tokens, self.wordpiece), "heads": rec.heads, "w": weights}
        self._write(f'<script type="application/json" class="tx-sentence" id="tx-s-{n}">{_json_block(block)}</script>\n')
        self.sentences.append({"i": rec.index, "src": rec.src[:80]})

    def set_alignments(self, links: dict[int, list], gold: Optional[list], report) -> None:
        """Word links per sentence index, gold (sure, possible) per sentence in order, and the
        report's AERs; `row` tells the page which decoder row speaks for a target word."""
        self.meta["align"] = {str(i): [list(p) for p in ps] for i, ps in links.items()}
        self.meta["align_method"] = report.align_method
        self.meta["align_row"] = report.align_row
        if gold is not None:
            self.meta["gold"] = [[sorted(map(list, s)), sorted(map(list, p - s))] for s, p in gold]
            self.meta["aer"] = {name: {str(k): round(v, 4) for k, v in by.items()} for name, by in report.aer_by_method.items()}
            if report.select:
                self.meta["select"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in report.select.items()}

    def close(self) -> None:
        tokens = [None] * len(self.token_ids)
        for t, i in self.token_ids.items():
            tokens[i] = t
        self.meta.update(tokens=tokens, sentences=self.sentences)
        if self.run_dir is not None:
            from .curves import overview_png

            png = overview_png(Path(self.run_dir) / "metrics.jsonl")
            if png is not None:
                self.meta["curves"] = base64.b64encode(png).decode("ascii")
        self._write(f'<script type="application/json" id="tx-meta">{_json_block(self.meta)}</script>\n')
        self._write(f"<script>{SCRIPT}</script>\n</body></html>\n")
        self.stream.flush()


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<link rel="icon" href="data:,">
<style>%STYLE%</style></head>
<body>
<header><h1 id="title">%TITLE%</h1>
<div id="controls">
<label>sentence <select id="sentence"></select></label>
<label>kind <select id="kind"></select></label>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<label><input type="checkbox" id="show-align" checked> alignments</label>
</div>
<p id="texts"></p>
<p id="aer"></p>
</header>
<main>
<section><h2>heatmap <span id="what"></span></h2>
<p id="readout" data-w="">hover a cell</p>
<div id="heatmap"></div>
<p class="legend" id="legend"></p></section>
<section><h2>every head of this layer (click to open)</h2><div id="thumbs"></div>
<h2>lines</h2><p class="legend">queries left, keys right; a link's opacity is its weight; hover a token</p>
<div id="lines"></div></section>
</main>
<details id="curves-box"><summary>training curves</summary><div id="curves"></div></details>
<div id="loading">loading...</div>
"""

STYLE = """
body{font:14px system-ui,sans-serif;margin:12px;color:#222;background:#fafafa}
h1{font-size:18px;margin:4px 0}h2{font-size:15px;margin:10px 0 4px}
#controls label{margin-right:12px}#texts{color:#444;margin:6px 0}
main{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}main>section{max-width:640px}
#heatmap{display:inline-grid;justify-content:start;gap:1px;font-size:11px;user-select:none}
#heatmap .cell{width:var(--c);height:var(--c);position:relative}
#heatmap .cell.masked{background:repeating-linear-gradient(45deg,#fff,#fff 2px,#e4e4e4 2px,#e4e4e4 4px)!important}
#heatmap .cell.hl{outline:1px solid rgba(255,80,80,.7)}
#heatmap .cell.al{box-shadow:inset 0 0 0 2px #ff3b30}
#heatmap .cell.gold-s::after,#heatmap .cell.gold-p::after{content:"";position:absolute;left:35%;top:35%;width:30%;height:30%;border-radius:50%;background:#fff;border:1px solid #000}
#heatmap .cell.gold-p::after{background:transparent}
#heatmap .row,#heatmap .col{white-space:nowrap;color:#333;font-family:monospace}
#heatmap .row{text-align:right;padding-right:4px;line-height:var(--c)}
#heatmap .col{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;padding-top:4px;width:var(--c);overflow:hidden}
#heatmap .hl-label{background:#ffd54f}
#readout{font-family:monospace;min-height:1.2em}
#thumbs{display:flex;flex-wrap:wrap;gap:8px}
#thumbs figure{margin:0;text-align:center;cursor:pointer;font-size:11px}
#thumbs canvas{border:2px solid transparent;image-rendering:pixelated;width:84px;height:84px}
#thumbs canvas.on{border-color:#ff3b30}
#lines svg text{font:12px monospace;cursor:default}
#lines svg text.hl{font-weight:bold;fill:#d00}
.legend{color:#666;font-size:12px}
#loading{display:none}
table.aer{border-collapse:collapse;font-size:12px}table.aer td,table.aer th{border:1px solid #ccc;padding:1px 6px}
"""

# The script: no library, no network. SVG is built as markup through innerHTML (the HTML parser
# puts it in the SVG namespace), so the page holds no namespace URL either.
SCRIPT = r"""
(function(){
'use strict';
const meta = JSON.parse(document.getElementById('tx-meta').textContent);
const P = meta.precision, SCALE = Math.pow(10, P);
const KIND_NAMES = {enc:'encoder self-attention', dec:'decoder self-attention', cross:'cross-attention'};
const VIRIDIS = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
const $ = id => document.getElementById(id);
const cache = new Map();
let cur = null;  // the sentence on screen
function colour(v){
  const x = Math.min(Math.max(v,0),1)*(VIRIDIS.length-1), i = Math.min(Math.floor(x), VIRIDIS.length-2), f = x-i;
  const a = VIRIDIS[i], b = VIRIDIS[i+1];
  return 'rgb('+[0,1,2].map(c => Math.round(a[c]+(b[c]-a[c])*f)).join(',')+')';
}
function esc(s){ return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;'); }
function show(t){ return t.replace(/\u2581/g,'_'); }
function sentence(n){  // parsed only when first picked
  if(!cache.has(n)){
    const s = JSON.parse($('tx-s-'+n).textContent);
    s.srcTok = s.s.map(i => meta.tokens[i]); s.tgtTok = s.t.map(i => meta.tokens[i]);
    cache.set(n, s);
    document.body.dataset.parsed = [...cache.keys()].join(',');  // which sentences were parsed (tests)
  }
  return cache.get(n);
}
function axes(s, kind){
  return kind === 'enc' ? [s.srcTok, s.srcTok] : kind === 'dec' ? [s.tgtTok, s.tgtTok] : [s.tgtTok, s.srcTok];
}
// [q][k] weights of one head (an index into s.heads) or 'mean', as rounded numbers
function matrix(s, kind, layer, head){
  const [rows, cols] = axes(s, kind), flat = s.w[kind][layer], Q = rows.length, K = cols.length, H = s.heads.length;
  const m = [];
  for(let q=0;q<Q;q++){
    const r = new Array(K);
    for(let k=0;k<K;k++){
      if(head === 'mean'){ let t=0; for(let h=0;h<H;h++) t += flat[(h*Q+q)*K+k]; r[k] = t/H/SCALE; }
      else r[k] = flat[(head*Q+q)*K+k]/SCALE;
    }
    m.push(r);
  }
  return m;
}
function fill(sel, values, labels, keep){
  sel.innerHTML = values.map((v,i) => '<option value="'+v+'">'+esc(labels[i])+'</option>').join('');
  if(values.map(String).includes(String(keep))) sel.value = keep;
}
function state(){ return {kind:$('kind').value, layer:$('layer').value, head:$('head').value === 'mean' ? 'mean' : +$('head').value}; }
function alignCells(s){
  // cells of the word links: rows speaking for the target word, columns of the source word's subwords
  const out = {al:new Set(), 's':new Set(), 'p':new Set()};
  const rowsOf = j => s.tw.map((w,t) => w === j ? (meta.align_row === 'input' ? t : t-1) : -1).filter(r => r >= 0);
  const colsOf = i => s.sw.map((w,k) => w === i ? k : -1).filter(k => k >= 0);
  const add = (set, links) => links.forEach(([i,j]) => rowsOf(j).forEach(r => colsOf(i).forEach(k => set.add(r+','+k))));
  if(meta.align && meta.align[s.i]) add(out.al, meta.align[s.i]);
  if(meta.gold){ const g = meta.gold[cur]; if(g){ add(out.s, g[0]); add(out.p, g[1]); } }
  return out;
}
function drawHeatmap(s, st){
  const [rows, cols] = axes(s, st.kind), m = matrix(s, st.kind, st.layer, st.head);
  const size = Math.max(8, Math.min(24, Math.floor(560/Math.max(cols.length, rows.length))));
  const box = $('heatmap');
  box.style.setProperty('--c', size+'px');
  box.style.gridTemplateColumns = 'auto repeat('+cols.length+', '+size+'px)';
  const showAl = st.kind === 'cross' && $('show-align').checked, marks = showAl ? alignCells(s) : null;
  const parts = ['<div class="corner"></div>'];
  cols.forEach((t,k) => parts.push('<div class="col" data-k="'+k+'">'+esc(show(t))+'</div>'));
  rows.forEach((t,q) => {
    parts.push('<div class="row" data-q="'+q+'">'+esc(show(t))+'</div>');
    m[q].forEach((v,k) => {
      const masked = st.kind === 'dec' && k > q, key = q+','+k;
      let cls = 'cell' + (masked ? ' masked' : '');
      if(marks){ if(marks.al.has(key)) cls += ' al'; if(marks.s.has(key)) cls += ' gold-s'; else if(marks.p.has(key)) cls += ' gold-p'; }
      parts.push('<div class="'+cls+'" data-q="'+q+'" data-k="'+k+'" data-w="'+v.toFixed(P)+'"'+(masked ? ' data-masked="1"' : '')
                 +' style="background:'+(masked ? '' : colour(v))+'"></div>');
    });
  });
  box.innerHTML = parts.join('');
  const headName = st.head === 'mean' ? 'mean of heads' : 'head '+s.heads[st.head];
  $('what').textContent = '(' + KIND_NAMES[st.kind] + ', layer ' + st.layer + ', ' + headName + ')';
  $('legend').textContent = (st.kind === 'enc' ? 'rows: source (query); columns: source (key)' :
    'rows: decoder input (query; row t predicts token t+1); columns: ' + (st.kind === 'dec' ? 'decoder input (key); hatched: the masked future' : 'source (key)'))
    + (showAl ? '; red frame: predicted alignment' + (meta.align_method ? ' (' + meta.align_method + ')' : '') + (meta.gold ? '; dot: gold (hollow: possible)' : '') : '');
}
function hover(ev){
  const c = ev.target.closest('.cell');
  const box = $('heatmap');
  box.querySelectorAll('.hl,.hl-label').forEach(e => e.classList.remove('hl','hl-label'));
  if(!c) return;
  const q = c.dataset.q, k = c.dataset.k, s = sentence(cur), [rows, cols] = axes(s, $('kind').value);
  box.querySelectorAll('.cell[data-q="'+q+'"],.cell[data-k="'+k+'"]').forEach(e => e.classList.add('hl'));
  box.querySelectorAll('.row[data-q="'+q+'"],.col[data-k="'+k+'"]').forEach(e => e.classList.add('hl-label'));
  const r = $('readout');
  r.dataset.q = q; r.dataset.k = k;
  if(c.dataset.masked){ r.dataset.w = ''; r.textContent = show(rows[q])+' -> '+show(cols[k])+': masked (future)'; return; }
  r.dataset.w = c.dataset.w;
  r.textContent = show(rows[q]) + ' -> ' + show(cols[k]) + ': ' + c.dataset.w;
}
function drawThumbs(s, st){
  const box = $('thumbs'), H = s.heads.length;
  box.innerHTML = '';
  const heads = [...Array(H).keys()].concat(['mean']);
  heads.forEach(h => {
    const m = matrix(s, st.kind, st.layer, h), Q = m.length, K = m[0].length;
    const fig = document.createElement('figure'), cv = document.createElement('canvas');
    cv.width = K; cv.height = Q; cv.dataset.head = h;
    if(String(h) === String(st.head)) cv.className = 'on';
    const g = cv.getContext('2d');
    for(let q=0;q<Q;q++) for(let k=0;k<K;k++){
      g.fillStyle = st.kind === 'dec' && k > q ? '#eee' : colour(m[q][k]); g.fillRect(k, q, 1, 1);
    }
    fig.appendChild(cv);
    const cap = document.createElement('figcaption'); cap.textContent = h === 'mean' ? 'mean' : 'head '+s.heads[h];
    fig.appendChild(cap);
    fig.addEventListener('click', () => { $('head').value = String(h); draw(); });
    box.appendChild(fig);
  });
}
function drawLines(s, st){
  const [rows, cols] = axes(s, st.kind), m = matrix(s, st.kind, st.layer, st.head);
  const step = 18, w = 420, h = Math.max(rows.length, cols.length)*step + 10, x1 = 120, x2 = w-120;
  const parts = ['<svg width="'+w+'" height="'+h+'" viewBox="0 0 '+w+' '+h+'">'];
  m.forEach((r,q) => r.forEach((v,k) => {
    if(v < 0.005) return;
    parts.push('<line class="link" data-q="'+q+'" data-k="'+k+'" data-w="'+v.toFixed(P)+'" x1="'+x1+'" y1="'+(q*step+14)+'" x2="'+x2+'" y2="'+(k*step+14)
               +'" stroke="#1f6fd1" stroke-width="2" stroke-opacity="'+v.toFixed(3)+'"></line>');
  }));
  rows.forEach((t,q) => parts.push('<text class="q" data-q="'+q+'" x="'+(x1-6)+'" y="'+(q*step+18)+'" text-anchor="end">'+esc(show(t))+'</text>'));
  cols.forEach((t,k) => parts.push('<text class="k" data-k="'+k+'" x="'+(x2+6)+'" y="'+(k*step+18)+'">'+esc(show(t))+'</text>'));
  parts.push('</svg>');
  $('lines').innerHTML = parts.join('');
}
function linesHover(ev){
  const t = ev.target.closest('text'), links = $('lines').querySelectorAll('line');
  $('lines').querySelectorAll('text.hl').forEach(e => e.classList.remove('hl'));
  if(!t){ links.forEach(l => l.style.display = ''); return; }
  t.classList.add('hl');
  const attr = t.classList.contains('q') ? 'q' : 'k', v = t.dataset[attr];
  links.forEach(l => l.style.display = l.dataset[attr] === v ? '' : 'none');
}
function aerText(){
  if(!meta.aer) return meta.align_method ? 'alignments: ' + meta.align_method : '';
  const rows = Object.entries(meta.aer).map(([name, by]) =>
    '<tr><th>'+esc(name)+'</th>'+Object.entries(by).map(([l,v]) => '<td>'+(l === 'all' ? 'all layers' : 'layer '+esc(l))+': '+v.toFixed(3)+'</td>').join('')+'</tr>');
  let sel = '';
  if(meta.select) sel = '<br>selected on the first '+meta.select.tune+' sentences (AER '+meta.select.tune_aer.toFixed(3)+'), AER on the other '
                       +meta.select.heldout+': '+(meta.select.heldout_aer === null ? 'n/a' : meta.select.heldout_aer.toFixed(3));
  return 'written: '+esc(meta.align_method || '')+sel+'<table class="aer"><caption>AER against gold, every method</caption>'+rows.join('')+'</table>';
}
function sentenceAer(s){  // Och & Ney, as the corpus figure: 1 - (|A&S| + |A&P|) / (|A| + |S|), S counted in P
  if(!meta.gold || !meta.align || !meta.gold[cur] || !meta.align[s.i]) return null;
  const key = ([i,j]) => i+'-'+j, A = meta.align[s.i].map(key), S = new Set(meta.gold[cur][0].map(key));
  const P = new Set([...S, ...meta.gold[cur][1].map(key)]);
  const n = A.length + S.size;
  return n ? 1 - (A.filter(x => S.has(x)).length + A.filter(x => P.has(x)).length)/n : 0;
}
function draw(){
  const st = state(), s = sentence(cur);
  drawHeatmap(s, st); drawThumbs(s, st); drawLines(s, st);
}
function pickKind(){
  const s = sentence(cur), kind = $('kind').value, layers = Object.keys(s.w[kind]);
  fill($('layer'), layers, layers, $('layer').value || layers[layers.length-1]);  // the last layer first
  draw();
}
function pick(){
  cur = +$('sentence').value;
  const s = sentence(cur), kinds = ['enc','dec','cross'].filter(k => s.w[k]);
  fill($('kind'), kinds, kinds.map(k => KIND_NAMES[k]), $('kind').value || (kinds.includes('cross') ? 'cross' : kinds[0]));
  const heads = s.heads.map((h,i) => i).concat(['mean']);
  fill($('head'), heads, s.heads.map(h => 'head '+h).concat(['mean of heads']), $('head').value || 'mean');
  const aer = sentenceAer(s);
  $('texts').innerHTML = '<b>source</b> '+esc(s.src)+'<br><b>target</b> '+esc(s.tgt)
    + (aer === null ? '' : '<br><b>this sentence</b> AER <span id="sentence-aer" data-aer="'+aer.toFixed(4)+'">'+aer.toFixed(3)+'</span>');
  pickKind();
}
fill($('sentence'), meta.sentences.map((_, n) => n), meta.sentences.map(s => s.i+': '+s.src), 0);
$('sentence').addEventListener('change', pick);
$('kind').addEventListener('change', pickKind);
$('layer').addEventListener('change', draw);
$('head').addEventListener('change', draw);
$('show-align').addEventListener('change', draw);
$('heatmap').addEventListener('mouseover', hover);
$('heatmap').addEventListener('mouseleave', () => hover({target: document.body}));
$('lines').addEventListener('mouseover', linesHover);
$('aer').innerHTML = aerText();
if(meta.curves) $('curves').innerHTML = '<img alt="training curves" src="data:image/png;base64,'+meta.curves+'">';
else $('curves-box').style.display = 'none';
if(!meta.align) $('show-align').parentNode.style.display = 'none';
if(meta.sentences.length) pick(); else $('texts').textContent = 'no sentences';
document.body.dataset.ready = '1';
})();
"""
