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
"#;

/// Shared by every page: the token from the page's own URL goes on every request it makes.
const COMMON_JS: &str = r#"
const TOKEN = new URLSearchParams(location.search).get('token');
const q = (url) => TOKEN ? url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN) : url;
async function api(url) { const r = await fetch(q(url)); if (!r.ok) throw new Error((await r.json()).error); return r.json(); }
function el(tag, text, attrs) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); return e; }
function row(cells, link) { const tr = el('tr'); cells.forEach((c, i) => { const td = el('td'); if (i === 0 && link) td.appendChild(el('a', c, {href: q(link)})); else td.textContent = c === null || c === undefined ? '—' : String(c); tr.appendChild(td); }); return tr; }
const num = (x, d = 4) => x === null || x === undefined ? '—' : Number(x).toFixed(d);
"#;

fn page(title: &str, body: &str, script: &str) -> Response {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · loop-runner</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\" id=\"home\">loop-runner</a></nav>{body}<script>{COMMON_JS}{script}</script></body></html>\n",
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
        r#"<h1>Runs</h1><table><thead><tr><th>run</th><th>task</th><th>agent</th><th>sandbox</th><th>state</th><th>best</th><th>test</th><th>iterations</th><th>spend $</th><th>started</th></tr></thead><tbody id="runs"></tbody></table><p id="error" class="muted"></p>"#,
        r#"
document.getElementById('home').href = q('/');
api('/api/runs').then(runs => {
  const body = document.getElementById('runs');
  for (const r of runs) {
    body.appendChild(row([r.run_id, r.task, r.agent === r.model ? r.agent : r.agent + ' (' + r.model + ')', r.sandbox,
      r.state === 'finished' ? r.state : 'unfinished', num(r.validation_score), num(r.test_score), r.iterations,
      num(r.cost_usd), r.started_at ? new Date(r.started_at).toISOString().replace('T', ' ').slice(0, 19) : '—'], '/runs/' + r.run_id));
  }
  if (!runs.length) document.getElementById('error').textContent = 'No runs yet.';
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
<p id="current" class="muted"></p><img id="plot" alt="validation score per iteration" width="640" height="320">
<h2>Leaderboard</h2><table><thead><tr><th>iteration</th><th>operation</th><th>family</th><th>status</th><th>validation</th><th>test</th><th>seconds</th><th>cost $</th></tr></thead><tbody id="leaders"></tbody></table>
<h2>Solution tree</h2><pre id="tree"></pre><h2>Agent steps</h2><table><thead><tr><th>step</th><th>calls</th><th>attempts</th><th>seconds</th><th>prompt tokens</th><th>completion tokens</th><th>cost $</th></tr></thead><tbody id="steps"></tbody></table>
<p id="error" class="muted"></p>"#,
        &format!(
            r#"
const ID = {id_json};
document.getElementById('home').href = q('/');
let points = 0;
async function refresh() {{
  const d = await api('/api/runs/' + ID);
  const r = d.run;
  document.getElementById('title').textContent = r.run_id;
  document.getElementById('summary').textContent = r.task + ' · ' + r.metric + ' · agent ' + r.agent + ' · sandbox ' + r.sandbox + ' · ' +
    (r.state === 'finished' ? 'finished (' + r.stop_reason + ')' : 'running or interrupted') + ' · best ' + num(r.validation_score) + ' · test ' + num(r.test_score) +
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
  const steps = document.getElementById('steps'); steps.replaceChildren();
  for (const [name, t] of Object.entries(d.steps)) steps.appendChild(row([name, t.calls, t.attempts, num(t.agent_seconds, 1), t.prompt_tokens, t.completion_tokens, num(t.cost_usd)]));
}}
let pending = null;
const soon = () => {{ if (!pending) pending = setTimeout(() => {{ pending = null; refresh().catch(e => document.getElementById('error').textContent = e.message); }}, 100); }};
refresh().catch(e => document.getElementById('error').textContent = e.message);
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
<h2 id="diff-title">Diff</h2><pre id="diff"></pre><h2>Scripts</h2><div id="files"></div><h2>The agent's answers</h2><div id="answers"></div><p id="error" class="muted"></p>"#,
        &format!(
            r#"
const ID = {id_json}, N = {n};
document.getElementById('home').href = q('/');
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
