//! A snapshot's `requirements.txt`: the distributions its scripts import, and everything those
//! require, pinned to the versions of the sandbox it ran in, with the Python version as a
//! comment. `pip install -r requirements.txt && python train.py` then rebuilds the environment in
//! a plain virtualenv.

use std::collections::{BTreeMap, BTreeSet};

use crate::sandbox::SandboxInfo;

/// Import names whose distribution is called something else.
const DISTRIBUTION_OF: [(&str, &str); 7] = [
    ("sklearn", "scikit-learn"),
    ("PIL", "pillow"),
    ("yaml", "pyyaml"),
    ("dateutil", "python-dateutil"),
    ("bs4", "beautifulsoup4"),
    ("Levenshtein", "python-levenshtein"),
    ("cv2", "opencv-python"),
];

/// The requirements file for scripts that ran in `info`'s sandbox.
pub fn requirements_txt<'a>(info: &SandboxInfo, scripts: impl IntoIterator<Item = &'a str>) -> String {
    let installed: BTreeMap<String, (&str, &str)> = info
        .packages
        .iter()
        .map(|(name, version)| (normalize(name), (name.as_str(), version.as_str())))
        .collect();
    let requires: BTreeMap<String, &Vec<String>> =
        info.requires.iter().map(|(k, v)| (normalize(k), v)).collect();
    let mut wanted: Vec<String> = Vec::new();
    for script in scripts {
        for module in imported_modules(script) {
            let name = DISTRIBUTION_OF.iter().find(|(m, _)| *m == module).map_or(module.as_str(), |(_, d)| d);
            let name = normalize(name);
            if installed.contains_key(&name) && !wanted.contains(&name) {
                wanted.push(name);
            }
        }
    }
    // Everything they require, as far as the sandbox has it.
    let mut pinned: BTreeSet<String> = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !pinned.insert(name.clone()) {
            continue;
        }
        for dep in requires.get(&name).map(|d| d.as_slice()).unwrap_or_default() {
            let dep = normalize(dep);
            if installed.contains_key(&dep) && !pinned.contains(&dep) {
                wanted.push(dep);
            }
        }
    }
    let python = info.interpreter.split_whitespace().nth(1).unwrap_or("unknown");
    let mut out = format!(
        "# What this snapshot's scripts import, and what those require, as installed in the\n# {} sandbox it ran in ({}).\n# python {python}\n",
        info.kind, info.interpreter
    );
    if info.kind == crate::sandbox::SandboxKind::Wasi {
        out.push_str("# These are the versions built into the WASI runtime; a native Python may need newer\n# releases of them (and a Python version they support) where these have no wheels.\n");
    }
    for name in &pinned {
        let (display, version) = installed[name];
        out.push_str(&format!("{display}=={version}\n"));
    }
    out
}

/// PEP 503 normalization: lowercase, runs of `-_.` as one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Top-level modules named by `import` and `from ... import` statements (relative imports left
/// out). A heuristic on lines, not a parser: enough for pinning, never run.
fn imported_modules(script: &str) -> Vec<String> {
    let mut modules = Vec::new();
    let mut push = |name: &str| {
        let top = name.trim().split(['.', ' ']).next().unwrap_or_default();
        if !top.is_empty()
            && top.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !modules.iter().any(|m| m == top)
        {
            modules.push(top.to_string());
        }
    };
    for line in script.lines() {
        for statement in line.split(';') {
            let statement = statement.trim();
            if let Some(rest) = statement.strip_prefix("import ") {
                for part in rest.split(',') {
                    push(part.split(" as ").next().unwrap_or_default());
                }
            } else if let Some(rest) = statement.strip_prefix("from ")
                && !rest.starts_with('.')
                && rest.contains(" import ")
            {
                push(rest);
            }
        }
    }
    modules
}

/// `Requires-Dist` names of a distribution's METADATA, leaving out extras' requirements.
pub fn requires_dist(metadata: &str) -> Vec<String> {
    metadata
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .filter(|req| !req.contains("extra =="))
        .filter_map(|req| {
            let name: String = req
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxKind;

    fn info() -> SandboxInfo {
        let packages = [
            ("numpy", "2.4.6"),
            ("pandas", "3.1.1"),
            ("scikit-learn", "1.9.1"),
            ("scipy", "1.17.1"),
            ("joblib", "1.6.0"),
            ("threadpoolctl", "3.8.0"),
            ("python-dateutil", "2.9.0.post0"),
            ("six", "1.17.0"),
            ("matplotlib", "3.10.0"),
        ];
        let requires = [
            ("scikit-learn", vec!["numpy", "scipy", "joblib", "threadpoolctl"]),
            ("pandas", vec!["numpy", "python-dateutil", "tzdata"]),
            ("python_dateutil", vec!["six"]),
            ("scipy", vec!["numpy"]),
        ];
        SandboxInfo {
            kind: SandboxKind::Process,
            interpreter: "CPython 3.11.7".into(),
            packages: packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            requires: requires
                .into_iter()
                .map(|(n, d)| (n.into(), d.into_iter().map(String::from).collect()))
                .collect(),
            module_sha256: None,
            module_flavor: None,
            engine: String::new(),
            layers: vec![],
            waived: vec![],
        }
    }

    #[test]
    fn imports_and_what_they_require_are_pinned() {
        let train = "import json, sys\nimport pandas as pd\nfrom sklearn.ensemble import HistGradientBoostingClassifier\nfrom . import local\n";
        let text = requirements_txt(&info(), [train, "import numpy as np; import pickle"]);
        let pins: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            pins,
            [
                "joblib==1.6.0",
                "numpy==2.4.6",
                "pandas==3.1.1",
                "python-dateutil==2.9.0.post0",
                "scikit-learn==1.9.1",
                "scipy==1.17.1",
                "six==1.17.0",
                "threadpoolctl==3.8.0"
            ]
        );
        assert!(text.contains("# python 3.11.7\n"), "{text}");
        assert!(!text.contains("matplotlib"));
    }

    #[test]
    fn requires_dist_leaves_out_extras() {
        let meta = "Metadata-Version: 2.1\nName: scikit-learn\nRequires-Dist: numpy>=1.22.0\nRequires-Dist: scipy (>=1.8)\nRequires-Dist: pytest>=7; extra == \"tests\"\n\nRequires-Dist: not-a-header\n";
        assert_eq!(requires_dist(meta), ["numpy", "scipy"]);
    }
}
