//! The pages: plain HTML with a little JavaScript that reads `/api/` (no build step, nothing
//! fetched from elsewhere). Text from runs is always inserted as text, never as markup.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::{AppState, run_dir};

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 70rem; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.add { color: #116611; } .del { color: #aa1111; }
.bar { background: #eee; height: 0.8rem; width: 100%; } .bar > div { background: #3a7; height: 100%; }
.muted { color: #777; } nav a { margin-right: 1rem; }
form.wide label { display: block; margin: 0.4rem 0; } form.wide label span { display: inline-block; width: 10rem; }
button { padding: 0.3rem 0.8rem; } .ok { color: #116611; } .fail { color: #aa1111; }
.state-running { color: #116611; font-weight: bold; } .state-interrupted { color: #aa6600; }
"#;

/// Shared by every page: the token from the page's own URL goes on every request it makes.
const COMMON_JS: &str = r#"
const TOKEN = new URLSearchParams(location.search).get('token');
const q = (url) => TOKEN ? url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN) : url;
async function api(url, init) { const r = await fetch(q(url), init); if (!r.ok) throw new Error((await r.json()).error); return r.json(); }
function el(tag, text, attrs) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); return e; }
function row(cells, link) { const tr = el('tr'); cells.forEach((c, i) => { const td = el('td'); if (i === 0 && link) td.appendChild(el('a', c, {href: q(link)})); else td.textContent = c === null || c === undefined ? '—' : String(c); tr.appendChild(td); }); return tr; }
for (const id of ['home', 'new']) document.getElementById(id).href = q(document.getElementById(id).getAttribute('href'));
const num = (x, d = 4) => x === null || x === undefined ? '—' : Number(x).toFixed(d);
"#;

fn page(title: &str, body: &str, script: &str) -> Response {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · loop-runner</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\" id=\"home\">loop-runner</a><a href=\"/new\" id=\"new\">start a run</a></nav>{body}<script>{COMMON_JS}{script}</script></body></html>\n",
        title = html_escape(title)
    ))
    .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub(super) async fn runs() -> Response {
    page(
        "runs",
        r#"<h1>Runs</h1><p><button id="compare" disabled>compare selected</button></p><table><thead><tr><th></th><th>run</th><th>task</th><th>agent</th><th>sandbox</th><th>state</th><th>best</th><th>test</th><th>iterations</th><th>spend $</th><th>started</th><th>finished</th></tr></thead><tbody id="runs"></tbody></table><p id="error" class="muted"></p>"#,
        r#"
const picked = new Set();
document.getElementById('compare').onclick = () => { location.href = q('/compare?runs=' + encodeURIComponent([...picked].join(','))); };
const when = (t) => t ? new Date(t).toISOString().replace('T', ' ').slice(0, 19) : '—';
api('/api/runs').then(runs => {
  const body = document.getElementById('runs');
  for (const r of runs) {
    const tr = row([r.run_id, r.task, r.agent === r.model ? r.agent : r.agent + ' (' + r.model + ')', r.sandbox,
      r.state, num(r.validation_score), num(r.test_score), r.iterations, num(r.cost_usd), when(r.started_at), when(r.finished_at)], '/runs/' + r.run_id);
    tr.children[4].className = 'state-' + r.state;
    const box = el('input', null, {type: 'checkbox', 'aria-label': 'compare ' + r.run_id});
    box.onchange = () => { box.checked ? picked.add(r.run_id) : picked.delete(r.run_id); document.getElementById('compare').disabled = picked.size < 2; };
    const td = el('td'); td.appendChild(box); tr.prepend(td);
    body.appendChild(tr);
  }
  if (!runs.length) document.getElementById('error').textContent = 'No runs yet: start one from a CSV with "start a run", or with `loop-runner run`.';
}).catch(e => document.getElementById('error').textContent = e.message);
"#,
    )
}

pub(super) async fn new_run() -> Response {
    page(
        "start a run",
        r#"<h1>Start a run</h1><p class="muted">The data stays on this server; the run holds out a test split the agent never sees and scores the winner on it.</p>
<form id="form" class="wide">
<label><span>data (CSV or Parquet)</span><input type="file" id="file" name="file" accept=".csv,.parquet,text/csv" required></label>
<label><span>task name</span><input id="name" name="name" required maxlength="100" placeholder="credit"></label>
<label><span>target column</span><input id="target" name="target" required placeholder="Status"></label>
<label><span>kind</span><select id="task" name="task"><option value="">infer from the target</option><option>binary</option><option>multiclass</option><option>regression</option></select></label>
<label><span>metric</span><select id="metric" name="metric"><option value="">the kind's default</option><option>roc_auc</option><option>accuracy</option><option>macro_f1</option><option>log_loss</option><option>rmse</option><option>mae</option><option>r2</option></select></label>
<label><span>budget</span><input id="budget" name="budget" value="10m" required></label>
<label><span>iterations (optional)</span><input id="iterations" name="iterations" type="number" min="1"></label>
<label><span>validation</span><select id="validation" name="validation"><option value="">auto</option><option>holdout</option><option>cv</option></select></label>
<button type="submit" id="start">start</button></form><p id="error" class="fail"></p>"#,
        r#"
document.getElementById('form').onsubmit = async (event) => {
  event.preventDefault();
  const error = document.getElementById('error'); error.textContent = '';
  const file = document.getElementById('file').files[0];
  if (!file) { error.textContent = 'choose a data file'; return; }
  const params = new URLSearchParams();
  for (const key of ['name', 'target', 'task', 'metric', 'budget', 'iterations', 'validation']) {
    const value = document.getElementById(key).value.trim();
    if (value) params.set(key, value);
  }
  if (file.name.toLowerCase().endsWith('.parquet')) params.set('format', 'parquet');
  document.getElementById('start').disabled = true;
  try {
    const started = await api('/api/runs?' + params, {method: 'POST', body: file, headers: {'Content-Type': 'application/octet-stream'}});
    location.href = q(started.url);
  } catch (e) { error.textContent = e.message; document.getElementById('start').disabled = false; }
};
"#,
    )
}

pub(super) async fn compare() -> Response {
    page(
        "compare runs",
        r#"<h1>Compare runs</h1><table><thead id="head"></thead><tbody id="rows"></tbody></table><div id="plots"></div><p id="error" class="muted"></p>"#,
        r#"
const ids = (new URLSearchParams(location.search).get('runs') || '').split(',').filter(x => x);
Promise.all(ids.map(id => api('/api/runs/' + encodeURIComponent(id)))).then(runs => {
  const head = el('tr'); head.appendChild(el('th', ''));
  for (const d of runs) { const th = el('th'); th.appendChild(el('a', d.run.run_id, {href: q('/runs/' + d.run.run_id)})); head.appendChild(th); }
  document.getElementById('head').appendChild(head);
  const best = (d) => d.iterations.find(i => i.is_best) || {};
  const fields = [['task', d => d.run.task], ['metric', d => d.run.metric], ['agent', d => d.run.agent + (d.run.model && d.run.model !== d.run.agent ? ' (' + d.run.model + ')' : '')],
    ['sandbox', d => d.run.sandbox], ['state', d => d.run.state], ['iterations', d => d.run.iterations], ['best validation', d => num(d.run.validation_score)],
    ['test', d => num(d.run.test_score)], ['best iteration', d => best(d).iteration], ['best family', d => best(d).family],
    ['wall seconds', d => num(d.run.wall_seconds, 0)], ['spend $', d => num(d.run.cost_usd)], ['tokens', d => d.run.prompt_tokens + d.run.completion_tokens]];
  const body = document.getElementById('rows');
  for (const [name, f] of fields) body.appendChild(row([name, ...runs.map(f)]));
  const plots = document.getElementById('plots');
  for (const d of runs) { plots.appendChild(el('h3', d.run.run_id)); plots.appendChild(el('img', null, {src: q('/api/runs/' + d.run.run_id + '/plot.svg'), alt: 'validation score per iteration of ' + d.run.run_id, width: 480, height: 240})); }
}).catch(e => document.getElementById('error').textContent = e.message);
"#,
    )
}

pub(super) async fn run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Err(e) = run_dir(&state, &id) {
        return not_found(e.status, &e.message);
    }
    let id_json = serde_json::to_string(&id).expect("strings serialize");
    page(
        &id,
        r#"<h1 id="title"></h1><p id="summary"></p><div class="bar"><div id="progress" style="width:0%"></div></div>
<p id="current" class="muted"></p><p><button id="stop" hidden>stop (evaluate and report)</button> <span id="stop-note" class="muted"></span></p><img id="plot" alt="validation score per iteration" width="640" height="320">
<h2>Leaderboard</h2><table><thead><tr><th>iteration</th><th>operation</th><th>family</th><th>status</th><th>validation</th><th>test</th><th>seconds</th><th>cost $</th></tr></thead><tbody id="leaders"></tbody></table>
<h2>Solution tree</h2><pre id="tree"></pre>
<h2>Audit</h2><div id="audits" class="muted">not audited yet (`loop-runner audit RUN`)</div>
<h2>Predict</h2><p class="muted">Rows with the feature columns (CSV with a header row, or Parquet), predicted by the best snapshot in the run's own sandbox.</p>
<form id="predict"><input type="file" id="rows" accept=".csv,.parquet,text/csv"> <button type="submit">predict</button></form><p id="predict-note" class="muted"></p><pre id="predictions" hidden></pre><h2>Agent steps</h2><table><thead><tr><th>step</th><th>calls</th><th>attempts</th><th>seconds</th><th>prompt tokens</th><th>completion tokens</th><th>cost $</th></tr></thead><tbody id="steps"></tbody></table>
<p id="error" class="muted"></p>"#,
        &format!(
            r#"
const ID = {id_json};
let points = 0;
async function refresh() {{
  const d = await api('/api/runs/' + ID);
  const r = d.run;
  document.getElementById('title').textContent = r.run_id;
  document.getElementById('summary').textContent = r.task + ' · ' + r.metric + ' · agent ' + r.agent + ' · sandbox ' + r.sandbox + ' · ' +
    (r.state === 'finished' ? 'finished (' + r.stop_reason + ')' : r.state === 'running' ? 'running' : 'interrupted (resumable: loop-runner resume)') + ' · best ' + num(r.validation_score) + ' · test ' + num(r.test_score) +
    ' · ' + r.iterations + ' iterations · ' + Math.round(r.wall_seconds) + ' s · $' + num(r.cost_usd) + ' · ' + r.prompt_tokens + ' + ' + r.completion_tokens + ' tokens';
  const share = r.budget_seconds ? Math.min(100, 100 * r.wall_seconds / r.budget_seconds) : (r.state === 'finished' ? 100 : 0);
  document.getElementById('progress').style.width = share.toFixed(1) + '%';
  document.getElementById('current').textContent = d.current ? ('now: ' + (d.current.iteration ? 'iteration ' + d.current.iteration + ', ' : '') + d.current.what) : '';
  const scored = d.iterations.filter(i => i.validation_score !== null).length;
  if (scored !== points) {{ points = scored; document.getElementById('plot').src = q('/api/runs/' + ID + '/plot.svg?n=' + scored); }}
  document.getElementById('plot').dataset.points = String(scored);
  const body = document.getElementById('leaders'); body.replaceChildren();
  const sign = r.higher_is_better ? -1 : 1;
  const sorted = [...d.iterations].sort((a, b) => (a.validation_score === null) - (b.validation_score === null) || sign * (a.validation_score - b.validation_score) || a.iteration - b.iteration);
  for (const i of sorted) body.appendChild(row([i.iteration, i.operation, i.family, i.status + (i.status_detail ? ': ' + i.status_detail : ''), num(i.validation_score), num(i.test_score), num(i.seconds, 1), num(i.cost_usd)], '/runs/' + ID + '/iterations/' + i.iteration));
  document.getElementById('tree').textContent = d.tree;
  document.getElementById('stop').hidden = r.state !== 'running';
  if (d.audits.length) {{
    const box = document.getElementById('audits'); box.replaceChildren(); box.className = '';
    for (const a of d.audits) {{
      const failed = a.checks.filter(c => !c.ok);
      box.appendChild(el('p', a.at + ' · ' + a.rev + (a.retrain ? ' (retrained)' : '') + ': ' + (a.passed ? 'passed, ' + a.checks.length + ' checks match bit for bit' : 'FAILED, ' + failed.length + ' of ' + a.checks.length + ' checks differ'), {{class: a.passed ? 'ok' : 'fail'}}));
      for (const c of failed) box.appendChild(el('pre', c.what + ': recorded ' + c.recorded + ', now ' + c.now));
    }}
  }}
  const steps = document.getElementById('steps'); steps.replaceChildren();
  for (const [name, t] of Object.entries(d.steps)) steps.appendChild(row([name, t.calls, t.attempts, num(t.agent_seconds, 1), t.prompt_tokens, t.completion_tokens, num(t.cost_usd)]));
}}
let pending = null;
const soon = () => {{ if (!pending) pending = setTimeout(() => {{ pending = null; refresh().catch(e => document.getElementById('error').textContent = e.message); }}, 100); }};
refresh().catch(e => document.getElementById('error').textContent = e.message);
document.getElementById('stop').onclick = () => {{
  document.getElementById('stop').disabled = true;
  api('/api/runs/' + ID + '/stop', {{method: 'POST'}}).then(() => document.getElementById('stop-note').textContent = 'stopping: the best iteration is being scored on the test split')
    .catch(e => {{ document.getElementById('stop-note').textContent = e.message; document.getElementById('stop').disabled = false; }});
}};
document.getElementById('predict').onsubmit = async (event) => {{
  event.preventDefault();
  const note = document.getElementById('predict-note'), out = document.getElementById('predictions');
  const file = document.getElementById('rows').files[0];
  if (!file) {{ note.textContent = 'choose a file of rows'; return; }}
  note.textContent = 'predicting...';
  const r = await fetch(q('/api/runs/' + ID + '/predict'), {{method: 'POST', body: file}});
  if (!r.ok) {{ note.textContent = (await r.json()).error; return; }}
  const text = await r.text();
  const lines = text.trim().split('\n');
  note.textContent = (lines.length - 1) + ' predictions from commit ' + r.headers.get('x-loop-runner-commit') + ' ';
  const link = el('a', 'download predictions.csv', {{href: URL.createObjectURL(new Blob([text], {{type: 'text/csv'}})), download: 'predictions.csv'}});
  note.appendChild(link);
  out.textContent = lines.slice(0, 21).join('\n') + (lines.length > 21 ? '\n...' : ''); out.hidden = false;
}};
const events = new EventSource(q('/api/runs/' + ID + '/events'));
for (const kind of ['iteration_started', 'step_finished', 'script_run', 'iteration_finished', 'final_evaluation', 'run_finished', 'session']) events.addEventListener(kind, soon);
"#
        ),
    )
}

pub(super) async fn iteration(
    State(state): State<Arc<AppState>>,
    Path((id, n)): Path<(String, u32)>,
) -> Response {
    if let Err(e) = run_dir(&state, &id) {
        return not_found(e.status, &e.message);
    }
    let id_json = serde_json::to_string(&id).expect("strings serialize");
    page(
        &format!("{id} iteration {n}"),
        r#"<h1 id="title"></h1><p><a id="back">back to the run</a> · diff against <a id="vs-parent">its parent</a> / <a id="vs-best">the best</a></p><p id="summary"></p>
<h2>Sandbox</h2><table><thead><tr><th>step</th><th>script</th><th>exit</th><th>limit</th><th>wall s</th><th>peak memory MiB</th></tr></thead><tbody id="scripts"></tbody></table>
<h2>Output</h2><div id="logs" class="muted">no output kept for this iteration</div><h2 id="diff-title">Diff</h2><pre id="diff"></pre><h2>Scripts</h2><div id="files"></div><h2>The agent's answers</h2><div id="answers"></div><p id="error" class="muted"></p>"#,
        &format!(
            r#"
const ID = {id_json}, N = {n};
document.getElementById('back').href = q('/runs/' + ID);
document.getElementById('vs-parent').href = q('/runs/' + ID + '/iterations/' + N);
document.getElementById('vs-best').href = q('/runs/' + ID + '/iterations/' + N + '?against=best');
const against = new URLSearchParams(location.search).get('against') || 'parent';
api('/api/runs/' + ID + '/iterations/' + N + '?against=' + against).then(d => {{
  const i = d.iteration;
  document.getElementById('title').textContent = ID + ' · iteration ' + N;
  document.getElementById('summary').textContent = i.operation + (i.parent ? ' of ' + i.parent : '') + ' · ' + i.family + ' · ' + i.status + (i.status_detail ? ': ' + i.status_detail : '') +
    ' · validation ' + num(i.validation_score) + ' · ' + num(i.seconds, 1) + ' s · commit ' + (i.commit || '—');
  const s = document.getElementById('scripts');
  for (const r of d.script_runs) s.appendChild(row([r.step, r.script, r.exit + (r.exit_code !== null ? ' ' + r.exit_code : ''), r.limit_hit, num(r.wall_seconds, 2), num(r.peak_memory_bytes / 1048576, 0)]));
  if (d.logs.length) {{
    const logs = document.getElementById('logs'); logs.replaceChildren(); logs.className = '';
    for (const l of d.logs) {{
      logs.appendChild(el('h3', l.step + ' · ' + l.script));
      logs.appendChild(el('pre', (l.stdout_tail || '') + (l.stderr_tail ? (l.stdout_tail ? '\n' : '') + l.stderr_tail : '') || '(no output)'));
    }}
  }}
  const pre = document.getElementById('diff');
  if (d.diff && d.diff.patch) {{
    document.getElementById('diff-title').textContent = 'Diff against iteration ' + d.diff.against;
    for (const line of d.diff.patch.split('\n')) pre.appendChild(el('div', line, {{class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : ''}}));
  }} else pre.textContent = 'nothing to compare with';
  const files = document.getElementById('files');
  for (const [name, text] of Object.entries(d.files)) {{ files.appendChild(el('h3', name)); files.appendChild(el('pre', text)); }}
  const answers = document.getElementById('answers');
  for (const [name, value] of Object.entries(d.answers)) {{ answers.appendChild(el('h3', name)); answers.appendChild(el('pre', JSON.stringify(value, null, 2))); }}
}}).catch(e => document.getElementById('error').textContent = e.message);
"#
        ),
    )
}

fn not_found(status: StatusCode, message: &str) -> Response {
    (status, Html(format!("<!doctype html><title>not found</title><p>{}</p>", html_escape(message))))
        .into_response()
}
