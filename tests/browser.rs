//! The dashboard as a person uses it, in a real headless Chromium: the runs list, starting a run
//! from a CSV in the browser, the live run page gaining plot points as iterations finish, an
//! iteration's diff, and two runs compared. Every page is screenshotted (and checked not to be
//! blank) and none may log a console error.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::Browser;
use common::server::start;
use common::{bin, fixtures, run_dir_of, stderr};

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// When each `iteration_finished` with a validation score was written (ms since the epoch).
fn scored_at(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["event"]["kind"] == "iteration_finished" && e["event"]["record"]["validation_score"].is_number()
        })
        .map(|e| {
            let at = humantime::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
            at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
        })
        .collect()
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let runs = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["run", "--iterations", "4", "--validation", "holdout", "--sandbox", "process", "--task"])
        .arg(fixtures().join("breast_cancer/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let first = run_dir_of(&o);
    let first_id = first.file_name().unwrap().to_string_lossy().to_string();
    let server = start(runs.path(), "127.0.0.1:0");
    let base = format!("http://{}", server.addr);
    let mut browser = Browser::launch();
    let shots = screenshots();

    // The runs list.
    let load = browser.open(&format!("{base}/"));
    browser.wait_for("document.querySelectorAll('#runs tr').length === 1", Duration::from_secs(20));
    let shown = browser.eval("document.querySelector('#runs tr').textContent");
    assert!(
        shown.as_str().unwrap().contains(&first_id) && shown.as_str().unwrap().contains("finished"),
        "{shown}"
    );
    eprintln!("runs list: load event after {:.0} ms", load.as_secs_f64() * 1000.0);
    browser.screenshot(&shots.join("runs.png"));

    // Start a run from a CSV, as a person would: the form, a file, the button.
    browser.open(&format!("{base}/new"));
    browser.set_file("#file", &fixtures().join("penguins/train.csv"));
    browser.eval(
        "document.getElementById('name').value = 'penguins-upload'; document.getElementById('target').value = 'species';
         document.getElementById('budget').value = '5m'; document.getElementById('iterations').value = '8';
         document.getElementById('validation').value = 'holdout'; true",
    );
    browser.screenshot(&shots.join("new.png"));
    browser.eval("document.getElementById('start').click(); true");
    let path = browser
        .wait_for("location.pathname.startsWith('/runs/') && location.pathname", Duration::from_secs(120));
    let id = path.as_str().unwrap().trim_start_matches("/runs/").to_string();
    assert!(id.starts_with("penguins-upload-"), "{id}");
    let run = runs.path().join(&id);

    // The live page, loaded afresh while the run goes: note when the plot gains each point.
    let started = std::time::Instant::now();
    let load = browser.open(&format!("{base}/runs/{id}"));
    browser.wait_for("document.getElementById('title').textContent.length > 0", Duration::from_secs(30));
    eprintln!(
        "run page, run in progress: load event after {:.0} ms, filled in after {:.0} ms",
        load.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    browser.eval(
        "window.gained = []; let last = Number(document.getElementById('plot').dataset.points || 0);
         new MutationObserver(() => { const n = Number(document.getElementById('plot').dataset.points);
           if (n > last) { for (let k = last + 1; k <= n; k++) window.gained.push([k, Date.now()]); last = n; } })
           .observe(document.getElementById('plot'), {attributes: true}); window.startPoints = last; true",
    );
    let start_points = browser.eval("window.startPoints").as_u64().unwrap();
    browser.wait_for(
        "window.gained.length >= 1 && document.getElementById('plot').complete",
        Duration::from_secs(180),
    );
    browser.screenshot(&shots.join("run-live.png"));
    assert!(
        browser.eval("document.getElementById('summary').textContent").as_str().unwrap().contains("running"),
        "the page says the run is going"
    );
    browser.wait_for(
        "document.getElementById('summary').textContent.includes('finished')",
        Duration::from_secs(300),
    );
    let gained: Vec<(u64, f64)> = serde_json::from_value(browser.eval("window.gained")).unwrap();
    let written = scored_at(&run);
    assert!(gained.len() >= 2, "the plot gained points while the page was open: {gained:?}");
    assert_eq!(start_points + gained.len() as u64, written.len() as u64, "{gained:?}");
    let mut late: Vec<f64> = gained.iter().map(|(k, at)| at - written[*k as usize - 1]).collect();
    late.sort_by(f64::total_cmp);
    eprintln!(
        "iteration finished -> point on the page's plot: median {:.0} ms, max {:.0} ms over {} points",
        late[late.len() / 2],
        late.last().unwrap(),
        late.len()
    );
    assert!(late[late.len() / 2] < 3000.0, "{late:?}");
    browser.screenshot(&shots.join("run-finished.png"));

    // An iteration and its diff against its parent.
    let records = common::records(&run);
    // One that ran scripts (a bag made of kept fold models, a skipped ensemble run none).
    let child = records
        .iter()
        .find(|r| r.parent.is_some() && r.script_seconds > 0.0)
        .expect("an improve, an ensemble or a refit has a parent");
    let load = browser.open(&format!("{base}/runs/{id}/iterations/{}", child.iteration));
    browser.wait_for("document.querySelectorAll('#diff .add').length > 0", Duration::from_secs(30));
    assert!(
        browser.eval("document.querySelectorAll('#logs h3').length").as_u64().unwrap() > 0,
        "script output shown"
    );
    eprintln!("iteration page: load event after {:.0} ms", load.as_secs_f64() * 1000.0);
    assert!(
        browser
            .eval("document.getElementById('diff-title').textContent")
            .as_str()
            .unwrap()
            .contains("against iteration")
    );
    browser.screenshot(&shots.join("iteration.png"));

    // Two runs side by side, picked in the list.
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "document.querySelectorAll('#runs input[type=checkbox]').length === 2",
        Duration::from_secs(20),
    );
    browser.eval(
        "for (const box of document.querySelectorAll('#runs input[type=checkbox]')) { box.click(); }
         document.getElementById('compare').click(); true",
    );
    browser.wait_for("document.querySelectorAll('#head th').length === 3", Duration::from_secs(30));
    let table = browser.eval("document.getElementById('rows').textContent").as_str().unwrap().to_string();
    assert!(table.contains("breast_cancer") && table.contains("penguins-upload"), "{table}");
    browser.wait_for(
        "[...document.images].every(i => i.complete && i.naturalWidth > 0)",
        Duration::from_secs(30),
    );
    browser.screenshot(&shots.join("compare.png"));

    assert!(browser.errors.is_empty(), "console errors: {:#?}", browser.errors);
}
