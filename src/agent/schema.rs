//! Output schemas and answer checking.
//!
//! The JSON Schema sent to the LLM is generated from the same Rust type the answer is
//! deserialized into, so the two cannot drift. An answer passes only if it is JSON, matches the
//! schema, deserializes, and satisfies the step's semantic validators; otherwise every problem
//! is listed so it can be quoted back to the agent.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A typed step answer.
pub trait StepOutput: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static> StepOutput for T {}

/// The schema of `T`, normalized to OpenAI's strict subset.
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
    let defs = schema.as_object_mut().and_then(|m| m.remove("$defs")).unwrap_or(Value::Null);
    normalize(&mut schema, &defs);
    schema
}

/// Inlines references, turns enums documented per variant into one `enum`, closes objects and
/// makes every property required (an optional one becomes nullable).
fn normalize(value: &mut Value, defs: &Value) {
    let Value::Object(map) = value else {
        if let Value::Array(items) = value {
            for item in items {
                normalize(item, defs);
            }
        }
        return;
    };
    if let Some(Value::String(reference)) = map.get("$ref").cloned() {
        let name = reference.trim_start_matches("#/$defs/");
        let mut target = defs.get(name).cloned().unwrap_or(json!({}));
        if let (Some(description), Value::Object(t)) = (map.get("description").cloned(), &mut target) {
            t.insert("description".into(), description);
        }
        *value = target;
        normalize(value, defs);
        return;
    }
    for key in ["$schema", "title"] {
        map.remove(key);
    }
    let numeric = |t: &Value| matches!(t.as_str(), Some("number" | "integer"));
    let is_numeric = match map.get("type") {
        Some(Value::Array(types)) => types.iter().any(numeric),
        Some(t) => numeric(t),
        None => false,
    };
    if is_numeric {
        // Strict mode refuses numeric `format`s; the range they imply is said with bounds, so a
        // constrained decoder cannot produce a number the answer's type cannot hold.
        let bounds: Option<(i64, i64)> = match map.remove("format").as_ref().and_then(Value::as_str) {
            Some("uint8") => Some((0, 255)),
            Some("uint16") => Some((0, 65_535)),
            Some("uint32") => Some((0, 4_294_967_295)),
            Some("uint64" | "uint") => Some((0, 9_007_199_254_740_991)),
            Some("int8") => Some((-128, 127)),
            Some("int16") => Some((-32_768, 32_767)),
            Some("int32") => Some((-2_147_483_648, 2_147_483_647)),
            Some("int64" | "int") => Some((-9_007_199_254_740_991, 9_007_199_254_740_991)),
            _ => None,
        };
        if let Some((low, high)) = bounds {
            map.entry("minimum").or_insert(json!(low));
            map.entry("maximum").or_insert(json!(high));
        }
    }
    if let Some(Value::Array(branches)) = map.get("oneOf").cloned() {
        let mut values = Vec::new();
        let mut notes = Vec::new();
        let all_strings = branches.iter().all(|b| {
            let v = b
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .or_else(|| b.get("const").map(|c| vec![c.clone()]));
            if let (Some(v), Some(d)) = (&v, b.get("description").and_then(Value::as_str)) {
                let names: Vec<String> = v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
                notes.push(format!("{}: {d}", names.join(", ")));
            }
            match v {
                Some(v) if v.iter().all(Value::is_string) => {
                    values.extend(v);
                    true
                }
                _ => false,
            }
        });
        if all_strings {
            map.remove("oneOf");
            map.insert("type".into(), json!("string"));
            map.insert("enum".into(), Value::Array(values));
            if !notes.is_empty() {
                let base = map
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('.')
                    .to_string();
                map.insert("description".into(), json!(format!("{base}. {}", notes.join(" "))));
            }
        }
    }
    for child in map.values_mut() {
        normalize(child, defs);
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        let keys: Vec<String> = props.keys().cloned().collect();
        let required: Vec<String> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let optional: Vec<String> = keys.iter().filter(|k| !required.contains(k)).cloned().collect();
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            for key in &optional {
                if let Some(Value::Object(p)) = props.get_mut(key)
                    && let Some(t) = p.get("type").cloned()
                {
                    let nullable = match t {
                        Value::Array(mut ts) => {
                            if !ts.contains(&json!("null")) {
                                ts.push(json!("null"));
                            }
                            Value::Array(ts)
                        }
                        other => json!([other, "null"]),
                    };
                    p.insert("type".into(), nullable);
                }
            }
        }
        map.insert("required".into(), Value::Array(keys.into_iter().map(Value::String).collect()));
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
}

/// Keywords some strict servers refuse although the schema is otherwise fine; the client drops
/// the one a server names and keeps structured output on (the runner's own rules still apply).
pub const DROPPABLE: [&str; 6] = ["maxLength", "minLength", "maxItems", "minItems", "minimum", "maximum"];

/// `schema` without the given keywords.
pub fn without(schema: &Value, keywords: &[String]) -> Value {
    let mut out = schema.clone();
    fn strip(v: &mut Value, keywords: &[String]) {
        match v {
            Value::Object(map) => {
                // Only as schema keywords: a property that happens to be named so stays.
                for k in keywords {
                    if map.get(k).is_some_and(|x| !x.is_object()) {
                        map.remove(k);
                    }
                }
                for child in map.values_mut() {
                    strip(child, keywords);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| strip(i, keywords)),
            _ => {}
        }
    }
    strip(&mut out, keywords);
    out
}

/// Where `schema` breaks OpenAI's strict-mode rules (empty: it satisfies them).
pub fn strict_problems(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if schema.get("type") != Some(&json!("object")) {
        problems.push("the root must be an object".into());
    }
    let mut enum_values = 0usize;
    let mut properties = 0usize;
    check_strict(schema, "$", 0, &mut problems, &mut enum_values, &mut properties);
    if enum_values > 1000 {
        problems.push(format!("{enum_values} enum values in all (at most 1000)"));
    }
    if properties > 5000 {
        problems.push(format!("{properties} object properties in all (at most 5000)"));
    }
    problems
}

fn check_strict(
    v: &Value,
    at: &str,
    depth: usize,
    problems: &mut Vec<String>,
    enums: &mut usize,
    props: &mut usize,
) {
    let Value::Object(map) = v else { return };
    if depth > 10 {
        problems.push(format!("{at}: nested deeper than 10 levels"));
    }
    for banned in [
        "oneOf",
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "propertyNames",
        "$ref",
        "$defs",
    ] {
        if map.contains_key(banned) {
            problems.push(format!("{at}: `{banned}` is not permitted"));
        }
    }
    if let Some(t) = map.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let known = ["string", "number", "integer", "boolean", "array", "object", "null"];
        if types.is_empty() || types.iter().any(|t| !known.contains(t)) {
            problems.push(format!("{at}: unknown type {t}"));
        }
        if types.contains(&"object") {
            match map.get("additionalProperties") {
                Some(Value::Bool(false)) => {}
                _ => problems.push(format!("{at}: an object must set `additionalProperties: false`")),
            }
            let keys: Vec<&String> = map
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().collect())
                .unwrap_or_default();
            *props += keys.len();
            let required: Vec<&str> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in &keys {
                if !required.contains(&key.as_str()) {
                    problems.push(format!(
                        "{at}.{key}: every property must be required (an optional one as nullable)"
                    ));
                }
            }
        }
        if (types.contains(&"number") || types.contains(&"integer"))
            && let Some(f) = map.get("format")
        {
            problems.push(format!("{at}: numeric `format` {f} is not permitted"));
        }
    } else if !map.contains_key("anyOf") && !map.contains_key("enum") && !map.contains_key("const") {
        problems.push(format!("{at}: no `type`"));
    }
    if let Some(values) = map.get("enum") {
        match values.as_array() {
            Some(a) if !a.is_empty() => *enums += a.len(),
            _ => problems.push(format!("{at}: `enum` must be a non-empty list")),
        }
    }
    if at == "$" && map.contains_key("anyOf") {
        problems.push("the root must not be an `anyOf`".into());
    }
    for (key, child) in map {
        match key.as_str() {
            "properties" => {
                if let Some(p) = child.as_object() {
                    for (name, schema) in p {
                        check_strict(schema, &format!("{at}.{name}"), depth + 1, problems, enums, props);
                    }
                }
            }
            "items" => check_strict(child, &format!("{at}[]"), depth + 1, problems, enums, props),
            "anyOf" => {
                for (i, branch) in child.as_array().into_iter().flatten().enumerate() {
                    check_strict(branch, &format!("{at}|{i}"), depth + 1, problems, enums, props);
                }
            }
            _ => {}
        }
    }
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
        b: Option<u32>,
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::validator_for(&schema_of::<Answer>()).unwrap()
    }

    fn no_rules(_: &Answer) -> Vec<String> {
        vec![]
    }

    #[test]
    fn schemas_are_closed_and_optional_fields_nullable() {
        let schema = schema_of::<Answer>();
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert!(schema.get("$schema").is_none() && schema.get("title").is_none());
        assert_eq!(strict_problems(&schema), Vec::<String>::new());
        let loose = schema_of::<Loose>();
        assert_eq!(loose["required"], json!(["a", "b"]));
        assert_eq!(loose["properties"]["a"]["type"], json!(["string", "null"]));
        // A nullable number loses its `format` too, its range said with bounds.
        let b = &loose["properties"]["b"];
        assert_eq!(b["type"], json!(["integer", "null"]));
        assert!(b.get("format").is_none(), "{b}");
        assert_eq!((&b["minimum"], &b["maximum"]), (&json!(0), &json!(4_294_967_295u64)));
        assert_eq!(strict_problems(&loose), Vec::<String>::new());
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
