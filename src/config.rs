//! Run configuration: the optional `loop-runner.toml` (agent, loop and sandbox settings), with
//! command-line values layered over it. The task file stays separate and keeps its own shape.
//!
//! ```toml
//! [agent]
//! backend = "openai"                    # builtin | openai
//! base_url = "http://localhost:11434/v1"
//! api_key_env = "OPENAI_API_KEY"        # the variable's *name*; the key is never written down
//! model = "qwen2.5-coder:14b"
//! models = { plan = "small-model" }     # per-step overrides
//! temperature = 0.2
//! max_tokens = 4096
//! seed = 7
//! structured_output = "auto"            # auto | json_schema | prompt
//! timeout = "120s"
//! max_attempts = 5
//! spend_cap_usd = 5.0
//! [agent.prices."gpt-4o-mini"]
//! input_per_million = 0.15
//! output_per_million = 0.6
//!
//! [loop]
//! max_iterations = 50
//! split_iterations = 1                  # the split may change only in the first N iterations
//! fix_attempts = 3                      # a failing script goes back to the agent this often
//! seed = 0
//! min_free_disk = "1GiB"                # stop starting iterations before the disk fills
//! failures_in_a_row = 25                # failed iterations in a row that stop the run (0: never)
//!
//! [validation]
//! method = "auto"                       # auto | holdout | cv
//! folds = 5                             # for cv
//! cv_max_rows = 5000                    # auto: cv up to this many training rows, holdout above
//! refit = true                          # holdout: retrain the final choice on all training rows
//! bag = true                            # cv: the final model averages the choice's fold models
//!
//! [sandbox]
//! kind = "wasi"
//! script_timeout = "10m"
//! memory = "3GiB"
//! disk = "2GiB"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentSettings, Price, StructuredOutput};
use crate::error::UserError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Builtin,
    Openai,
    Replay,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Builtin => "builtin",
            BackendKind::Openai => "openai",
            BackendKind::Replay => "replay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    #[default]
    Wasi,
    Process,
}

/// `[agent]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub backend: Option<BackendKind>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub model: Option<String>,
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    pub temperature: Option<f32>,
    /// Answer length for every step (see `step_max_tokens`).
    pub max_tokens: Option<u32>,
    /// Answer length by step, e.g. `{ train = 8192, plan = 512 }`.
    #[serde(default)]
    pub step_max_tokens: BTreeMap<String, u32>,
    /// How far the answer length may grow when answers are cut off.
    pub max_tokens_cap: Option<u32>,
    /// The model's context length in tokens [default: known for common families, else 8192].
    pub context_tokens: Option<u32>,
    /// Questions in a row that find the server unreachable before the run pauses.
    pub breaker_failures: Option<u32>,
    /// Pauses (`breaker_pause`, doubling each time) before the run stops cleanly on an
    /// unreachable server.
    pub breaker_pauses: Option<u32>,
    /// The first pause [default: 30s].
    pub breaker_pause: Option<String>,
    pub seed: Option<i64>,
    pub structured_output: Option<StructuredOutput>,
    pub timeout: Option<String>,
    pub max_attempts: Option<u32>,
    pub max_http_retries: Option<u32>,
    pub spend_cap_usd: Option<f64>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
}

/// `[loop]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSection {
    pub max_iterations: Option<u32>,
    pub split_iterations: Option<u32>,
    pub fix_attempts: Option<u32>,
    pub seed: Option<u64>,
    /// Iterations run at once.
    pub jobs: Option<u32>,
    /// Free space on the run directory's filesystem that the run never uses.
    pub min_free_disk: Option<String>,
    /// Failed iterations in a row that stop the run (0: never).
    pub failures_in_a_row: Option<u32>,
}

/// `[search]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Drafts (new approaches) before the search improves anything.
    pub drafts: Option<u32>,
    /// An ensemble of the scored iterations every this many iterations (0: never).
    pub ensemble_every: Option<u32>,
    /// Chance of improving a good iteration other than the best.
    pub explore: Option<f64>,
    /// Chance of debugging a failed iteration when one is worth it.
    pub debug: Option<f64>,
}

/// How candidates are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMethod {
    /// Cross-validation for small pools, a held-out split for large ones.
    #[default]
    Auto,
    Holdout,
    Cv,
}

/// `[validation]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSection {
    pub method: Option<ValidationMethod>,
    pub folds: Option<u32>,
    /// With `auto`: cross-validation up to this many training rows.
    pub cv_max_rows: Option<u64>,
    /// With a held-out split: retrain the final choice on training and validation rows before
    /// the test, as its own snapshot.
    pub refit: Option<bool>,
    /// With cross-validation: the final model is the selected iteration trained once per fold
    /// and averaged (a bag), as its own snapshot, instead of its model trained on every row.
    pub bag: Option<bool>,
}

/// `[sandbox]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub kind: Option<SandboxChoice>,
    /// Interpreter for the process sandbox.
    pub python: Option<PathBuf>,
    /// Process-sandbox layers the user accepts running without.
    #[serde(default)]
    pub allow_weaker: Vec<String>,
    /// BLAS/OpenMP threads for process-sandbox scripts.
    pub threads: Option<u32>,
    pub script_timeout: Option<String>,
    pub memory: Option<String>,
    pub disk: Option<String>,
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default, rename = "loop")]
    pub loop_: LoopSection,
    #[serde(default)]
    pub sandbox: SandboxSection,
    #[serde(default)]
    pub search: SearchSection,
    #[serde(default)]
    pub validation: ValidationSection,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, UserError> {
        let text = fs_err::read_to_string(path)
            .map_err(|e| UserError::setup(format!("cannot read the config file: {e}")))?;
        toml::from_str(&text).map_err(|e| {
            UserError::setup(format!("config file `{}` is not valid: {}", path.display(), e.message().trim()))
        })
    }
}

/// Agent settings resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub backend: BackendKind,
    pub base_url: String,
    /// Name of the environment variable holding the key.
    pub api_key_env: Option<String>,
    pub timeout: Duration,
    pub settings: AgentSettings,
    /// The circuit breaker: failed questions in a row before a pause, and pauses before the
    /// run stops.
    pub breaker_failures: u32,
    pub breaker_pauses: u32,
    pub breaker_pause: Duration,
}

/// Loop settings resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    pub max_iterations: u32,
    pub split_iterations: u32,
    pub fix_attempts: u32,
    pub seed: u64,
    /// Iterations run at once (each in its own sandbox).
    pub jobs: u32,
    /// Free bytes on the run directory's filesystem that the run never uses: no iteration
    /// starts unless there is room for it, the others in flight and the final model beyond it.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: u64,
    /// Failed iterations in a row (since the last scored one) that stop the run: a run whose
    /// every attempt fails would otherwise spend its budget committing failures. 0: never.
    #[serde(default = "default_failures_in_a_row")]
    pub failures_in_a_row: u32,
}

/// `[loop] min_free_disk` unless set.
const MIN_FREE_DISK: u64 = 1 << 30;

fn default_min_free_disk() -> u64 {
    MIN_FREE_DISK
}

/// `[loop] failures_in_a_row` unless set: an LLM agent debugs a failed line at most three
/// times, so this many failures in a row are several approaches failing, each debugged.
const FAILURES_IN_A_ROW: u32 = 25;

fn default_failures_in_a_row() -> u32 {
    FAILURES_IN_A_ROW
}

/// Search settings resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// `None`: as many as the agent has distinct approaches (the built-in agent's portfolio), or
    /// 5 for an LLM.
    pub drafts: Option<u32>,
    pub ensemble_every: u32,
    pub explore: f64,
    pub debug: f64,
}

/// Validation settings resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationConfig {
    pub method: ValidationMethod,
    pub folds: u32,
    pub cv_max_rows: u64,
    pub refit: bool,
    pub bag: bool,
}

/// Pools up to this many rows are cross-validated under `auto` (see README, "Validation").
pub const CV_MAX_ROWS: u64 = 5000;

impl ValidationConfig {
    /// The folds to score candidates on, for a pool of `rows` training rows; `None`: a
    /// held-out split.
    pub fn folds_for(&self, rows: usize) -> Option<u32> {
        match self.method {
            ValidationMethod::Holdout => None,
            ValidationMethod::Cv => Some(self.folds),
            ValidationMethod::Auto => (rows as u64 <= self.cv_max_rows).then_some(self.folds),
        }
    }
}

/// Sandbox settings resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub kind: SandboxChoice,
    pub python: Option<PathBuf>,
    pub allow_weaker: Vec<crate::sandbox::process::Layer>,
    pub threads: u32,
    #[serde(with = "crate::config::secs")]
    pub script_timeout: Duration,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// Values given on the command line, each overriding the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<BackendKind>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub max_iterations: Option<u32>,
    pub sandbox: Option<SandboxChoice>,
    pub seed: Option<u64>,
    pub jobs: Option<u32>,
    pub min_free_disk: Option<u64>,
    pub validation: Option<ValidationMethod>,
    /// The machine's cores and available memory, for the default number of jobs.
    pub machine: Option<Machine>,
}

/// What the machine offers (read once by the CLI and passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cores: u32,
    pub memory_available: u64,
}

impl Machine {
    /// Iterations at once: one per core, as long as each has memory for its sandbox's cap (and
    /// a little for the runner), at least one.
    pub fn default_jobs(&self, memory_per_job: u64) -> u32 {
        let by_memory = self.memory_available / (memory_per_job + (512 << 20)).max(1);
        (self.cores as u64).min(by_memory).max(1) as u32
    }
}

/// Everything a run needs besides the task.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub agent: AgentConfig,
    pub loop_: LoopConfig,
    pub sandbox: SandboxConfig,
    pub search: SearchConfig,
    pub validation: ValidationConfig,
}

impl RunConfig {
    /// Command line over file over defaults.
    pub fn resolve(file: &ConfigFile, cli: &Overrides) -> Result<Self, UserError> {
        let a = &file.agent;
        let backend = cli.backend.or(a.backend).unwrap_or_default();
        let duration =
            |field: &str, value: &Option<String>, default: Duration| -> Result<Duration, UserError> {
                match value {
                    None => Ok(default),
                    Some(text) => crate::units::parse_duration(text)
                        .map_err(|e| UserError::setup(format!("config `{field}`: {e}"))),
                }
            };
        let bytes = |field: &str, value: &Option<String>, default: u64| -> Result<u64, UserError> {
            match value {
                None => Ok(default),
                Some(text) => crate::units::parse_bytes(text)
                    .map_err(|e| UserError::setup(format!("config `{field}`: {e}"))),
            }
        };
        let model = cli.model.clone().or_else(|| a.model.clone()).unwrap_or_else(|| match backend {
            BackendKind::Openai => "gpt-4o-mini".into(),
            _ => "builtin".into(),
        });
        for step in a.models.keys().chain(a.step_max_tokens.keys()) {
            if !crate::steps::STEP_NAMES.contains(&step.as_str()) {
                return Err(UserError::setup(format!(
                    "config `agent.models` or `agent.step_max_tokens` names an unknown step `{step}`; steps are: {}",
                    crate::steps::STEP_NAMES.join(", ")
                )));
            }
        }
        if let Some(t) = a.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(UserError::setup(format!("config `agent.temperature` {t} is outside 0..=2")));
        }
        let settings = AgentSettings {
            model,
            models: a.models.clone(),
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            step_max_tokens: a.step_max_tokens.clone(),
            max_tokens_cap: a.max_tokens_cap.unwrap_or(16_384),
            context_tokens: a.context_tokens,
            seed: a.seed,
            structured: a.structured_output.unwrap_or_default(),
            max_attempts: a.max_attempts.unwrap_or(5).max(1),
            max_http_retries: a.max_http_retries.unwrap_or(4),
            spend_cap_usd: a.spend_cap_usd,
            prices: a.prices.clone(),
            ..AgentSettings::default()
        };
        let agent = AgentConfig {
            backend,
            base_url: cli
                .base_url
                .clone()
                .or_else(|| a.base_url.clone())
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key_env: a
                .api_key_env
                .clone()
                .or_else(|| (backend == BackendKind::Openai).then(|| "OPENAI_API_KEY".into())),
            timeout: duration("agent.timeout", &a.timeout, Duration::from_secs(120))?,
            settings,
            breaker_failures: a.breaker_failures.unwrap_or(3).max(1),
            breaker_pauses: a.breaker_pauses.unwrap_or(3),
            breaker_pause: duration("agent.breaker_pause", &a.breaker_pause, Duration::from_secs(30))?,
        };
        let l = &file.loop_;
        let loop_ = LoopConfig {
            max_iterations: cli.max_iterations.or(l.max_iterations).unwrap_or(1000).max(1),
            split_iterations: l.split_iterations.unwrap_or(1),
            fix_attempts: l.fix_attempts.unwrap_or(3),
            seed: cli.seed.or(l.seed).unwrap_or(0),
            jobs: 1,
            min_free_disk: match cli.min_free_disk {
                Some(b) => b,
                None => bytes("loop.min_free_disk", &l.min_free_disk, MIN_FREE_DISK)?,
            },
            failures_in_a_row: l.failures_in_a_row.unwrap_or(FAILURES_IN_A_ROW),
        };
        let s = &file.sandbox;
        let allow_weaker = s
            .allow_weaker
            .iter()
            .map(|n| {
                crate::sandbox::process::Layer::parse(n)
                    .map_err(|e| UserError::setup(format!("config `sandbox.allow_weaker`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(cap) = agent.settings.spend_cap_usd {
            let unpriced = agent.unpriced_models();
            if !unpriced.is_empty() {
                return Err(UserError::setup(format!(
                    "`spend_cap_usd = {cap}` cannot hold: model{} {} ha{} no price, so {} calls would count as $0",
                    if unpriced.len() == 1 { "" } else { "s" },
                    unpriced.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                    if unpriced.len() == 1 { "s" } else { "ve" },
                    if unpriced.len() == 1 { "its" } else { "their" },
                ))
                .with_hint(format!(
                    "add a price to the config, e.g.\n  [agent.prices.\"{}\"]\n  input_per_million = 0.15\n  output_per_million = 0.6",
                    unpriced[0]
                )));
            }
        }
        let memory_bytes = bytes("sandbox.memory", &file.sandbox.memory, 3 << 30)?;
        let loop_ = LoopConfig {
            jobs: cli
                .jobs
                .or(l.jobs)
                .or_else(|| cli.machine.map(|m| m.default_jobs(memory_bytes)))
                .unwrap_or(1)
                .max(1),
            ..loop_
        };
        let sandbox = SandboxConfig {
            kind: cli.sandbox.or(s.kind).unwrap_or_default(),
            python: s.python.clone(),
            allow_weaker,
            threads: s.threads.unwrap_or(1).max(1),
            script_timeout: duration("sandbox.script_timeout", &s.script_timeout, Duration::from_secs(600))?,
            memory_bytes: bytes("sandbox.memory", &s.memory, 3 << 30)?,
            disk_bytes: bytes("sandbox.disk", &s.disk, 2 << 30)?,
        };
        let q = &file.search;
        for (field, value) in [("search.explore", q.explore), ("search.debug", q.debug)] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(UserError::setup(format!("config `{field}` {v} is outside 0..=1")));
            }
        }
        let search = SearchConfig {
            drafts: q.drafts,
            ensemble_every: q.ensemble_every.unwrap_or(5),
            explore: q.explore.unwrap_or(0.2),
            debug: q.debug.unwrap_or(0.3),
        };
        let v = &file.validation;
        let folds = v.folds.unwrap_or(5);
        if !(2..=20).contains(&folds) {
            return Err(UserError::setup(format!("config `validation.folds` {folds} is outside 2..=20")));
        }
        let validation = ValidationConfig {
            method: cli.validation.or(v.method).unwrap_or_default(),
            folds,
            cv_max_rows: v.cv_max_rows.unwrap_or(CV_MAX_ROWS),
            refit: v.refit.unwrap_or(true),
            bag: v.bag.unwrap_or(true),
        };
        Ok(Self { agent, loop_, sandbox, search, validation })
    }
}

impl AgentConfig {
    /// Models this configuration calls that have no price (an LLM backend only).
    pub fn unpriced_models(&self) -> Vec<String> {
        if self.backend != BackendKind::Openai {
            return vec![];
        }
        let s = &self.settings;
        let mut models: Vec<String> = std::iter::once(&s.model)
            .chain(s.models.values())
            .filter(|m| !s.prices.contains_key(*m))
            .cloned()
            .collect();
        models.sort();
        models.dedup();
        models
    }
}

impl RunConfig {
    /// The same configuration as a config file, so a run can be resumed or replayed with exactly
    /// the settings it started with (secrets are never part of it: only the key's variable name).
    pub fn to_file(&self) -> ConfigFile {
        let a = &self.agent;
        let s = &a.settings;
        ConfigFile {
            agent: AgentSection {
                backend: Some(a.backend),
                base_url: Some(a.base_url.clone()),
                api_key_env: a.api_key_env.clone(),
                model: Some(s.model.clone()),
                models: s.models.clone(),
                temperature: s.temperature,
                max_tokens: s.max_tokens,
                step_max_tokens: s.step_max_tokens.clone(),
                max_tokens_cap: Some(s.max_tokens_cap),
                context_tokens: s.context_tokens,
                breaker_failures: Some(a.breaker_failures),
                breaker_pauses: Some(a.breaker_pauses),
                breaker_pause: Some(format!("{}ms", a.breaker_pause.as_millis())),
                seed: s.seed,
                structured_output: Some(s.structured),
                timeout: Some(format!("{}ms", a.timeout.as_millis())),
                max_attempts: Some(s.max_attempts),
                max_http_retries: Some(s.max_http_retries),
                spend_cap_usd: s.spend_cap_usd,
                prices: s.prices.clone(),
            },
            loop_: LoopSection {
                max_iterations: Some(self.loop_.max_iterations),
                split_iterations: Some(self.loop_.split_iterations),
                fix_attempts: Some(self.loop_.fix_attempts),
                seed: Some(self.loop_.seed),
                jobs: Some(self.loop_.jobs),
                min_free_disk: Some(self.loop_.min_free_disk.to_string()),
                failures_in_a_row: Some(self.loop_.failures_in_a_row),
            },
            sandbox: SandboxSection {
                kind: Some(self.sandbox.kind),
                python: self.sandbox.python.clone(),
                allow_weaker: self.sandbox.allow_weaker.iter().map(|l| l.name().to_string()).collect(),
                threads: Some(self.sandbox.threads),
                script_timeout: Some(format!("{}ms", self.sandbox.script_timeout.as_millis())),
                memory: Some(self.sandbox.memory_bytes.to_string()),
                disk: Some(self.sandbox.disk_bytes.to_string()),
            },
            search: SearchSection {
                drafts: self.search.drafts,
                ensemble_every: Some(self.search.ensemble_every),
                explore: Some(self.search.explore),
                debug: Some(self.search.debug),
            },
            validation: ValidationSection {
                method: Some(self.validation.method),
                folds: Some(self.validation.folds),
                cv_max_rows: Some(self.validation.cv_max_rows),
                refit: Some(self.validation.refit),
                bag: Some(self.validation.bag),
            },
        }
    }
}

pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_wins_over_file_over_defaults() {
        let file: ConfigFile = toml::from_str(
            "[agent]\nbackend = \"openai\"\nmodel = \"file-model\"\nmodels = { train = \"coder\" }\ntimeout = \"30s\"\n[loop]\nmax_iterations = 7\n[sandbox]\nmemory = \"1GiB\"\n",
        )
        .unwrap();
        let config = RunConfig::resolve(&file, &Overrides::default()).unwrap();
        assert_eq!(config.agent.backend, BackendKind::Openai);
        assert_eq!(config.agent.settings.model_for("train"), "coder");
        assert_eq!(config.agent.settings.model_for("plan"), "file-model");
        assert_eq!(config.agent.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(config.agent.timeout, Duration::from_secs(30));
        assert_eq!(config.loop_.max_iterations, 7);
        assert_eq!(config.sandbox.memory_bytes, 1 << 30);
        let cli =
            Overrides { backend: Some(BackendKind::Builtin), max_iterations: Some(2), ..Default::default() };
        let config = RunConfig::resolve(&file, &cli).unwrap();
        assert_eq!(config.agent.backend, BackendKind::Builtin);
        assert_eq!(config.loop_.max_iterations, 2);
    }

    #[test]
    fn a_config_survives_the_round_trip_through_a_file() {
        let file: ConfigFile = toml::from_str(
            "[agent]\nbackend = \"openai\"\nmodel = \"m\"\ntemperature = 0.5\nspend_cap_usd = 2.0\n[agent.prices.m]\ninput_per_million = 1.0\noutput_per_million = 2.0\n[loop]\nsplit_iterations = 3\n[sandbox]\nscript_timeout = \"90s\"\n[validation]\nmethod = \"cv\"\nfolds = 3\nrefit = true\n",
        )
        .unwrap();
        let config = RunConfig::resolve(&file, &Overrides { seed: Some(9), ..Default::default() }).unwrap();
        let text = toml::to_string(&config.to_file()).unwrap();
        let again = RunConfig::resolve(&toml::from_str(&text).unwrap(), &Overrides::default()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_spend_cap_needs_a_price_for_every_model() {
        let file: ConfigFile = toml::from_str(
            "[agent]\nbackend = \"openai\"\nmodel = \"m\"\nmodels = { train = \"coder\" }\nspend_cap_usd = 1.0\n[agent.prices.m]\ninput_per_million = 1.0\noutput_per_million = 2.0\n",
        )
        .unwrap();
        let err = RunConfig::resolve(&file, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("`coder` has no price"), "{err}");
        assert!(err.hint.as_deref().unwrap_or_default().contains("[agent.prices.\"coder\"]"));
        let mut priced = file.clone();
        priced
            .agent
            .prices
            .insert("coder".into(), crate::agent::Price { input_per_million: 3.0, output_per_million: 9.0 });
        let config = RunConfig::resolve(&priced, &Overrides::default()).unwrap();
        assert!(config.agent.unpriced_models().is_empty());
        let mut uncapped = file;
        uncapped.agent.spend_cap_usd = None;
        let config = RunConfig::resolve(&uncapped, &Overrides::default()).unwrap();
        assert_eq!(config.agent.unpriced_models(), ["coder"]);
    }

    #[test]
    fn jobs_default_to_the_cores_as_memory_allows() {
        let m = Machine { cores: 8, memory_available: 10 << 30 };
        assert_eq!(m.default_jobs(3 << 30), 2, "10 GiB holds two 3 GiB sandboxes and the runner");
        assert_eq!(Machine { cores: 2, memory_available: 64 << 30 }.default_jobs(3 << 30), 2);
        assert_eq!(Machine { cores: 4, memory_available: 1 << 30 }.default_jobs(3 << 30), 1);
        let cli = Overrides { machine: Some(m), ..Default::default() };
        assert_eq!(RunConfig::resolve(&ConfigFile::default(), &cli).unwrap().loop_.jobs, 2);
        let file: ConfigFile = toml::from_str("[loop]\njobs = 1\n").unwrap();
        assert_eq!(RunConfig::resolve(&file, &cli).unwrap().loop_.jobs, 1, "the file wins over the machine");
    }

    #[test]
    fn validation_follows_the_pool_size_under_auto() {
        let config = RunConfig::resolve(&ConfigFile::default(), &Overrides::default()).unwrap();
        assert_eq!(config.validation.folds_for(CV_MAX_ROWS as usize), Some(5));
        assert_eq!(config.validation.folds_for(CV_MAX_ROWS as usize + 1), None);
        let file: ConfigFile = toml::from_str("[validation]\nmethod = \"cv\"\nfolds = 3\n").unwrap();
        let cv = RunConfig::resolve(&file, &Overrides::default()).unwrap();
        assert_eq!(cv.validation.folds_for(1_000_000), Some(3));
        let cli = Overrides { validation: Some(ValidationMethod::Holdout), ..Default::default() };
        assert_eq!(RunConfig::resolve(&file, &cli).unwrap().validation.folds_for(10), None);
        let bad: ConfigFile = toml::from_str("[validation]\nfolds = 1\n").unwrap();
        let err = RunConfig::resolve(&bad, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("validation.folds"), "{err}");
    }

    #[test]
    fn bad_config_is_named() {
        let err = toml::from_str::<ConfigFile>("[agent]\nbackend = \"gpt\"\n").unwrap_err();
        assert!(err.to_string().contains("gpt"));
        assert!(
            toml::from_str::<ConfigFile>("[agent]\nkey = \"x\"\n").is_err(),
            "unknown fields are refused"
        );
        let file: ConfigFile = toml::from_str("[agent]\nmodels = { training = \"x\" }\n").unwrap();
        let err = RunConfig::resolve(&file, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown step `training`"), "{err}");
        let file: ConfigFile = toml::from_str("[sandbox]\nmemory = \"lots\"\n").unwrap();
        assert!(
            RunConfig::resolve(&file, &Overrides::default())
                .unwrap_err()
                .to_string()
                .contains("sandbox.memory")
        );
    }
}
