//! Output schemas and answer checking.
//!
//! The JSON Schema sent to the LLM is generated from the same Rust type the answer is
//! deserialized into, so the two cannot drift. An answer passes only if it is JSON, matches the
//! schema, deserializes, and satisfies the step's semantic validators; otherwise every problem
//! is listed so it can be quoted back to the agent.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A typed step answer.
pub trait StepOutput: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static> StepOutput for T {}

/// The schema of `T`, made strict-friendly: every object closed to extra properties. Also says
/// whether OpenAI's strict mode accepts it (every property required).
pub fn schema_of<T: JsonSchema>() -> (Value, bool) {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
    }
    let strict = close_objects(&mut schema);
    (schema, strict)
}

/// Adds `additionalProperties: false` to every object schema; returns whether every object
/// also requires all of its properties.
fn close_objects(value: &mut Value) -> bool {
    let mut strict = true;
    match value {
        Value::Object(map) => {
            // schemars adds `format: uint32`, `double`... which strict mode rejects; the
            // bounds that matter are in `minimum`/`maximum`.
            let numeric = matches!(map.get("type").and_then(Value::as_str), Some("number" | "integer"));
            if numeric {
                map.remove("format");
            }
            if let Some(Value::Object(props)) = map.get("properties") {
                let keys: Vec<String> = props.keys().cloned().collect();
                let required: Vec<String> = map
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                strict &= keys.iter().all(|k| required.contains(k));
                map.entry("additionalProperties").or_insert(Value::Bool(false));
            }
            for child in map.values_mut() {
                strict &= close_objects(child);
            }
        }
        Value::Array(items) => {
            for child in items {
                strict &= close_objects(child);
            }
        }
        _ => {}
    }
    strict
}

/// Finds the JSON object in a reply: the whole text, a fenced block, or the outermost braces.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return Ok(value);
    }
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        let body_start = after.find('\n').map_or(0, |i| i + 1);
        if let Some(end) = after[body_start..].find("```")
            && let Ok(value) = serde_json::from_str::<Value>(after[body_start..body_start + end].trim())
        {
            return Ok(value);
        }
    }
    if let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}'))
        && start < end
        && let Ok(value) = serde_json::from_str::<Value>(&trimmed[start..=end])
    {
        return Ok(value);
    }
    let error = serde_json::from_str::<Value>(trimmed).err().map(|e| e.to_string()).unwrap_or_default();
    let preview: String = trimmed.chars().take(200).collect();
    Err(format!("the reply is not a JSON object ({error}); it begins: {preview:?}"))
}

/// Checks a reply against `schema` and `T`, then the semantic `validate`; returns the value or
/// every problem found.
pub fn check<T: StepOutput>(
    reply: &str,
    validator: &jsonschema::Validator,
    validate: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
) -> Result<T, Vec<String>> {
    let value = extract_json(reply).map_err(|e| vec![e])?;
    let schema_errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { format!("at the top level: {e}") } else { format!("at `{at}`: {e}") }
        })
        .collect();
    if !schema_errors.is_empty() {
        return Err(schema_errors);
    }
    let typed: T =
        serde_json::from_value(value).map_err(|e| vec![format!("does not fit the expected shape: {e}")])?;
    let problems = validate(&typed);
    if problems.is_empty() { Ok(typed) } else { Err(problems) }
}

/// The schema instructions for prompt mode (servers without `json_schema` output).
pub fn prompt_instructions(schema: &Value) -> String {
    format!(
        "Reply with a single JSON object and nothing else (no prose, no code fences). It must match \
         this JSON Schema:\n{}",
        serde_json::to_string_pretty(schema).expect("schemas serialize")
    )
}

/// The message that sends a rejected answer's problems back to the agent.
pub fn feedback(problems: &[String]) -> String {
    let mut text = String::from("Your answer was rejected:\n");
    for p in problems {
        text.push_str(&format!("- {p}\n"));
    }
    text.push_str("Reply again with the whole corrected JSON object.");
    text
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Answer {
        family: String,
        depth: u32,
        notes: Vec<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Loose {
        a: Option<String>,
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::validator_for(&schema_of::<Answer>().0).unwrap()
    }

    fn no_rules(_: &Answer) -> Vec<String> {
        vec![]
    }

    #[test]
    fn schema_is_closed_and_strictness_is_detected() {
        let (schema, strict) = schema_of::<Answer>();
        assert!(strict);
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert!(schema.get("$schema").is_none());
        assert!(!schema_of::<Loose>().1);
    }

    #[test]
    fn replies_are_found_in_fences_and_prose() {
        let expected = serde_json::json!({"a": 1});
        assert_eq!(extract_json("{\"a\": 1}").unwrap(), expected);
        assert_eq!(extract_json("Sure!\n```json\n{\"a\": 1}\n```\n").unwrap(), expected);
        assert_eq!(extract_json("Here: {\"a\": 1} hope it helps").unwrap(), expected);
        assert!(extract_json("no json here").unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn every_problem_is_reported() {
        let v = validator();
        let ok = check::<Answer>(r#"{"family":"hgb","depth":3,"notes":[]}"#, &v, &no_rules).unwrap();
        assert_eq!(ok.depth, 3);
        let errs =
            check::<Answer>(r#"{"family":1,"depth":-2,"notes":[],"extra":true}"#, &v, &no_rules).unwrap_err();
        assert!(errs.len() >= 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("/family")), "{errs:?}");
        let errs = check::<Answer>("{\"family\": ", &v, &no_rules).unwrap_err();
        assert!(errs[0].contains("not a JSON object"));
        let rule = |a: &Answer| {
            if a.family == "knn" { vec!["knn is not allowed".to_string()] } else { vec![] }
        };
        let errs = check::<Answer>(r#"{"family":"knn","depth":1,"notes":[]}"#, &v, &rule).unwrap_err();
        assert_eq!(errs, ["knn is not allowed"]);
        assert!(feedback(&errs).contains("- knn is not allowed"));
    }
}
