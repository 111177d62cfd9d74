//! `docs/configuration.md` against the config types, so the reference cannot drift: every key the
//! types accept is documented, every documented key exists, each documented default is the real
//! one, and each documented environment variable sets its key.
//!
//! **The keys the types accept** are found by asking serde: a key `zzz_probe` put in a table is
//! refused (`deny_unknown_fields`) with the list of the table's fields, and a field holds a table
//! when a `{ zzz_probe = 1 }` put there is refused the same way (an array of tables when
//! `[{ zzz_probe = 1 }]` is). No derive and no list to keep: a field added to a struct shows up.
//!
//! **The documented keys** are the rows of the tables headed `| key | default | environment |
//! meaning |`, under a heading that names the table (`` ## `[nats]` ``, `` ### `[sources.hmac]` ``,
//! `` ## `[[sources]]` ``; a heading naming no table takes full dotted keys). A key holding a
//! table is documented by a section of its own, or by one row whose text names each of its keys
//! (`rate_limit`: `{ per_second, burst }`).
//!
//! **Defaults**: a backticked TOML value must leave the parsed configuration exactly as leaving
//! the key out does (compared through `Debug`, which shows every field); `none` and a backticked
//! key (`ingest.max_body_bytes`: inherited) are not compared; *required* must fail when left
//! out; `see below` is the value of the key in the section's TOML code block.
//!
//! **Environment**: the variable is `INLET__` and the key's path in upper case joined by `__`
//! (`<n>` for an array index); set to the documented default it gives the default, for a
//! required key it stands in for the file, and otherwise a value of the wrong shape is refused
//! naming the key (it reached it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Config, ConfigError};

/// A configuration holding every optional table and one element of every array, each with only
/// its required keys: the base every key is checked in. One key per line (required keys are left
/// out by dropping their line).
const BASE: &str = r#"
[ingest.tls]
cert_file = "/etc/inlet/cert.pem"
key_file = "/etc/inlet/key.pem"

[worker.tls]
cert_file = "/etc/inlet/cert.pem"
key_file = "/etc/inlet/key.pem"

[console]
public_url = "https://inlet.example.com"

[console.oidc]
issuer = "https://id.example.com"
client_id = "inlet"
client_secret = "oidc-secret"

[console.github]
client_id = "gh-client"
client_secret = "gh-secret"

[[sources]]
name = "s"
kind = "hmac"
secrets = ["secret"]

[sources.hmac]
header = "X-Signature"

[[sources]]
name = "gh"
kind = "github"
secrets = ["secret"]

[[backfill]]
source = "gh"
token = "gh-token"
repository = "acme/shop"
hook_id = 7

[[destinations]]
name = "d"
url = "http://127.0.0.1:9/hook"
signing_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

[[routes]]
source = "s"
destinations = ["d"]
"#;

const DOC: &str = "docs/configuration.md";
const PROBE: &str = "zzz_probe";

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn base() -> toml::Table {
    BASE.parse().unwrap()
}

fn parse(table: &toml::Table, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    Config::parse(&toml::to_string(table).unwrap(), env)
}

fn debug(config: &Config) -> String {
    format!("{config:#?}")
}

/// A key's path: table names and array indexes; `sources.hmac.header` is `sources`, 0, `hmac`,
/// `header` (every array element checked is the first); `sources` is `sources`.
fn segments(dotted: &str, arrays: &BTreeSet<String>) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut so_far = String::new();
    for name in dotted.split('.') {
        if arrays.contains(&so_far) {
            segments.push(Segment::Index);
        }
        so_far = if so_far.is_empty() { name.to_owned() } else { format!("{so_far}.{name}") };
        segments.push(Segment::Key(name.to_owned()));
    }
    segments
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index,
}

/// Sets `path` to `value` in `table`, creating tables (and first array elements) on the way.
fn set(table: &mut toml::Table, path: &[Segment], value: toml::Value) {
    let mut current = table;
    for (index, segment) in path.iter().enumerate() {
        let last = index + 1 == path.len();
        let Segment::Key(name) = segment else { continue };
        if last {
            current.insert(name.clone(), value);
            return;
        }
        let is_array = path.get(index + 1) == Some(&Segment::Index);
        let entry = current.entry(name.clone()).or_insert_with(|| {
            if is_array {
                toml::Value::Array(vec![toml::Value::Table(toml::Table::new())])
            } else {
                toml::Value::Table(toml::Table::new())
            }
        });
        current = match entry {
            toml::Value::Array(items) => match items.first_mut() {
                Some(toml::Value::Table(element)) => element,
                _ => panic!("{name}: not an array of tables"),
            },
            toml::Value::Table(inner) => inner,
            _ => panic!("{name}: not a table"),
        };
    }
}

/// Removes `path` from `table`; whether it was there.
fn remove(table: &mut toml::Table, path: &[Segment]) -> bool {
    let mut current = table;
    for (index, segment) in path.iter().enumerate() {
        let Segment::Key(name) = segment else { continue };
        if index + 1 == path.len() {
            return current.remove(name).is_some();
        }
        current = match current.get_mut(name) {
            Some(toml::Value::Table(inner)) => inner,
            Some(toml::Value::Array(items)) => match items.first_mut() {
                Some(toml::Value::Table(element)) => element,
                _ => return false,
            },
            _ => return false,
        };
    }
    false
}

/// The value at `path` in `table`.
fn get(table: &toml::Table, path: &[Segment]) -> Option<toml::Value> {
    let mut current = toml::Value::Table(table.clone());
    for segment in path {
        current = match (segment, current) {
            (Segment::Key(name), toml::Value::Table(mut inner)) => inner.remove(name)?,
            (Segment::Index, toml::Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
            _ => return None,
        };
    }
    Some(current)
}

/// The error's key without array indexes (`sources[0].name` → `sources.name`).
fn error_key(error: &ConfigError) -> Option<String> {
    match error {
        ConfigError::Invalid { key, .. } => Some(key.replace("[0]", "")),
        _ => None,
    }
}

/// What a field holds, as serde sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Leaf,
    Table(BTreeMap<String, Shape>),
    Tables(BTreeMap<String, Shape>),
}

/// The fields of the table at `path` (empty: the root), from the refusal of a table holding only
/// a probe key put there (whatever the base held); none when what is there is no table.
fn fields_at(path: &[Segment]) -> Option<BTreeSet<String>> {
    let mut table = base();
    let probe = toml::Value::Table(toml::Table::from_iter([(PROBE.to_owned(), toml::Value::Integer(1))]));
    match path {
        [] => table = toml::Table::from_iter([(PROBE.to_owned(), toml::Value::Integer(1))]),
        [parent @ .., Segment::Index] => set(&mut table, parent, toml::Value::Array(vec![probe])),
        _ => set(&mut table, path, probe),
    }
    let Err(ConfigError::Invalid { message, .. }) = parse(&table, &no_env()) else { return None };
    let rest = message.strip_prefix(&format!("unknown field `{PROBE}`, "))?;
    if rest.starts_with("there are no fields") {
        return Some(BTreeSet::new());
    }
    let listed = rest.strip_prefix("expected one of ").or_else(|| rest.strip_prefix("expected "))?;
    Some(listed.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Every field under `dotted`, with its shape.
fn walk(dotted: &str, arrays: &mut BTreeSet<String>) -> BTreeMap<String, Shape> {
    let mut path = if dotted.is_empty() { Vec::new() } else { segments(dotted, arrays) };
    if arrays.contains(dotted) {
        path.push(Segment::Index);
    }
    let fields = fields_at(&path).unwrap_or_else(|| panic!("cannot list the fields of `{dotted}`"));
    let mut shapes = BTreeMap::new();
    for field in fields {
        let child = if dotted.is_empty() { field.clone() } else { format!("{dotted}.{field}") };
        let child_path = segments(&child, arrays);
        let shape = if fields_at(&child_path).is_some() {
            Shape::Table(walk(&child, arrays))
        } else {
            let mut element = child_path.clone();
            element.push(Segment::Index);
            if fields_at(&element).is_some() {
                arrays.insert(child.clone());
                Shape::Tables(walk(&child, arrays))
            } else {
                Shape::Leaf
            }
        };
        shapes.insert(field, shape);
    }
    shapes
}

/// One documented key.
#[derive(Debug)]
struct Row {
    /// Dotted path, without indexes.
    key: String,
    /// The default cell.
    default: String,
    /// The environment cell.
    environment: String,
    /// The whole row (what it names).
    text: String,
    /// Line in the document (1-based).
    line: usize,
    /// The TOML code blocks of its section, for `see below`.
    section_toml: String,
}

/// The tables a heading names: `` `[a.b]` `` or `` `[[a]]` ``.
fn heading_tables(heading: &str) -> Vec<String> {
    heading
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|name| {
            name.strip_prefix("[[")
                .and_then(|n| n.strip_suffix("]]"))
                .or_else(|| name.strip_prefix('[')?.strip_suffix(']'))
        })
        .map(str::to_owned)
        .collect()
}

fn documented() -> Vec<Row> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DOC)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    let mut section_start = 0;
    let mut in_table = false;
    for (index, line) in lines.iter().enumerate() {
        if line.starts_with('#') {
            tables = heading_tables(line);
            section_start = index;
            in_table = false;
            continue;
        }
        if line.trim() == "| key | default | environment | meaning |" {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 4, "{DOC}:{}: a key row needs 4 cells: {line}", index + 1);
        let name = cells[0].trim_matches('`');
        // `see below` may point into a subsection: up to the next `## `.
        let section_end = lines[index..].iter().position(|l| l.starts_with("## ")).map_or(lines.len(), |p| index + p);
        let section_toml = toml_blocks(&lines[section_start..section_end]);
        let owners = if tables.is_empty() { vec![String::new()] } else { tables.clone() };
        for table in owners {
            rows.push(Row {
                key: if table.is_empty() { name.to_owned() } else { format!("{table}.{name}") },
                default: cells[1].to_owned(),
                environment: cells[2].to_owned(),
                text: line.to_string(),
                line: index + 1,
                section_toml: section_toml.clone(),
            });
        }
    }
    rows
}

/// The contents of the ```toml blocks among `lines`.
fn toml_blocks(lines: &[&str]) -> String {
    let mut blocks = String::new();
    let mut inside = false;
    for line in lines {
        match (inside, line.trim()) {
            (false, "```toml") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                blocks.push_str(line);
                blocks.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The environment variable of `key`.
fn variable(key: &str, arrays: &BTreeSet<String>) -> String {
    let mut name = String::from(super::ENV_PREFIX);
    let parts: Vec<String> = segments(key, arrays)
        .into_iter()
        .map(|segment| match segment {
            Segment::Key(key) => key.to_ascii_uppercase(),
            Segment::Index => "<n>".to_owned(),
        })
        .collect();
    name.push_str(&parts.join("__"));
    name
}

/// A parsed default cell.
enum Default {
    /// A TOML value.
    Value(toml::Value),
    /// No default: leaving it out is refused.
    Required,
    /// Unset (an optional key).
    None,
    /// Another key's value (`ingest.max_body_bytes`): that key is checked on its own row.
    Inherited,
}

fn default_of(row: &Row, keys: &BTreeSet<String>) -> Result<Default, String> {
    let cell = row.default.as_str();
    if cell.starts_with("*required*") {
        return Ok(Default::Required);
    }
    if cell.starts_with("none") {
        return Ok(Default::None);
    }
    let field = row.key.rsplit('.').next().unwrap_or_default();
    if cell.starts_with("see below") {
        let block: toml::Table =
            row.section_toml.parse().map_err(|e| format!("the section's TOML block does not parse: {e}"))?;
        return block
            .get(field)
            .cloned()
            .map(Default::Value)
            .ok_or_else(|| format!("`see below`, but no TOML block of the section sets `{field}`"));
    }
    let Some(literal) = cell.strip_prefix('`').and_then(|rest| rest.split('`').next()) else {
        return Err(format!(
            "the default cell `{cell}` must start with a backticked TOML value, `none`, `*required*` or `see below`"
        ));
    };
    if keys.contains(literal) {
        return Ok(Default::Inherited);
    }
    let parsed: toml::Table =
        format!("value = {literal}").parse().map_err(|e| format!("`{literal}` is not a TOML value: {e}"))?;
    Ok(Default::Value(parsed["value"].clone()))
}

/// The environment value that stands for `value` (a string as it is, anything else as TOML).
fn env_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Where two Debug renderings first differ, for the message.
fn first_difference(expected: &str, actual: &str) -> String {
    let (expected, actual): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = expected.iter().zip(&actual).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
    format!(
        "real default: {} — with the documented one: {}",
        expected.get(at).map_or("", |l| l.trim()),
        actual.get(at).map_or("", |l| l.trim())
    )
}

/// Every key the types accept: (dotted path, shape).
fn accepted() -> (BTreeMap<String, Shape>, BTreeSet<String>) {
    let mut arrays = BTreeSet::new();
    let tree = walk("", &mut arrays);
    let mut flat = BTreeMap::new();
    fn flatten(prefix: &str, tree: &BTreeMap<String, Shape>, flat: &mut BTreeMap<String, Shape>) {
        for (name, shape) in tree {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if let Shape::Table(children) | Shape::Tables(children) = shape {
                flatten(&key, children, flat);
            }
            flat.insert(key, shape.clone());
        }
    }
    flatten("", &tree, &mut flat);
    (flat, arrays)
}

#[test]
fn the_configuration_reference_documents_every_key_its_default_and_its_variable() {
    let (accepted, arrays) = accepted();
    assert!(accepted.contains_key("nats.url") && accepted.contains_key("sources.hmac.header"), "{accepted:?}");
    let rows = documented();
    let documented_keys: BTreeSet<String> = rows.iter().map(|row| row.key.clone()).collect();
    let all_keys: BTreeSet<String> = accepted.keys().cloned().collect();
    let base_config = parse(&base(), &no_env()).unwrap_or_else(|e| panic!("the test's BASE config: {e}"));
    let base_debug = debug(&base_config);
    let mut problems = Vec::new();

    // Every key the types accept is documented: a row of its own, the section of its table, or
    // (a table) one row naming each of its keys.
    let named_in_parent_row = |key: &str| -> bool {
        let Some((parent, field)) = key.rsplit_once('.') else { return false };
        rows.iter().any(|row| {
            row.key == parent
                && row.text.match_indices(field).any(|(at, _)| {
                    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
                    !row.text[..at].ends_with(identifier) && !row.text[at + field.len()..].starts_with(identifier)
                })
        })
    };
    for (key, shape) in &accepted {
        let has_section = documented_keys.iter().any(|k| k.starts_with(&format!("{key}.")));
        let ok = documented_keys.contains(key)
            || (matches!(shape, Shape::Table(_) | Shape::Tables(_)) && has_section)
            || named_in_parent_row(key);
        if ok {
            continue;
        }
        let (table, field) = key.rsplit_once('.').unwrap_or(("", key));
        let heading = if table.is_empty() {
            "a section of its own".to_owned()
        } else if arrays.contains(table) {
            format!("the table under `[[{table}]]`")
        } else {
            format!("the table under `[{table}]`")
        };
        let hint = match shape {
            Shape::Leaf => format!(
                "| `{field}` | <its default: a backticked TOML value, none, or *required*> | `{}` | <what it does> |",
                variable(key, &arrays)
            ),
            Shape::Table(children) | Shape::Tables(children) => format!(
                "either a section `### `[{key}]`` with a key table for {}, or one row for `{field}` naming each of them",
                children.keys().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        problems.push(format!("`{key}` is a config key {DOC} does not document: add to {heading}:\n    {hint}"));
    }

    for row in &rows {
        let at = format!("{DOC}:{}: `{}`", row.line, row.key);
        if !accepted.contains_key(&row.key) {
            problems.push(format!(
                "{at} is documented but is no config key (the config refuses it): remove the row or fix its name"
            ));
            continue;
        }
        let path = segments(&row.key, &arrays);
        let variable = variable(&row.key, &arrays);
        if !row.environment.contains(&format!("`{variable}`")) {
            problems.push(format!("{at}: its environment column must name `{variable}`"));
        }
        let env_name = variable.replace("<n>", "0");
        let default = match default_of(row, &all_keys) {
            Ok(default) => default,
            Err(why) => {
                problems.push(format!("{at}: {why}"));
                continue;
            }
        };
        match default {
            Default::Value(value) => {
                let mut with_default = base();
                set(&mut with_default, &path, value.clone());
                match parse(&with_default, &no_env()) {
                    Ok(config) if debug(&config) == base_debug => {}
                    Ok(config) => problems.push(format!(
                        "{at}: documented default `{}` is not the real default ({}); fix the default cell",
                        row.default,
                        first_difference(&base_debug, &debug(&config))
                    )),
                    Err(error) => problems.push(format!("{at}: the documented default is refused: {error}")),
                }
                let from_env = BTreeMap::from([(env_name.clone(), env_text(&value))]);
                match parse(&base(), &from_env) {
                    Ok(config) if debug(&config) == base_debug => {}
                    Ok(_) => problems.push(format!("{at}: `{env_name}` set to the default changes the config")),
                    Err(error) => problems.push(format!("{at}: `{env_name}` set to the default is refused: {error}")),
                }
            }
            Default::Required => {
                let mut without = base();
                if !remove(&mut without, &path) {
                    problems.push(format!("{at} is *required*: the test's BASE config must set it"));
                    continue;
                }
                match parse(&without, &no_env()) {
                    Err(error)
                        if error_key(&error).is_some_and(|k| k.starts_with(&row.key) || row.key.starts_with(&k)) => {}
                    Err(error) => problems
                        .push(format!("{at} is documented *required*, but leaving it out fails otherwise: {error}")),
                    Ok(_) => problems.push(format!(
                        "{at} is documented *required*, but the config is valid without it: give its default"
                    )),
                }
                // The variable stands in for the file.
                if let Some(value @ (toml::Value::String(_) | toml::Value::Array(_))) = get(&base(), &path) {
                    let from_env = BTreeMap::from([(env_name.clone(), env_text(&value))]);
                    match parse(&without, &from_env) {
                        Ok(config) if debug(&config) == base_debug => {}
                        Ok(_) => problems.push(format!("{at}: `{env_name}` does not stand in for the key")),
                        Err(error) => {
                            problems.push(format!("{at}: `{env_name}` does not stand in for the key: {error}"))
                        }
                    }
                }
            }
            Default::None | Default::Inherited => {
                // Reached: a value of the wrong shape is refused naming the key.
                let from_env = BTreeMap::from([(env_name.clone(), format!("{{ {PROBE} = 1 }}"))]);
                match parse(&base(), &from_env) {
                    Err(error) if error_key(&error).is_some_and(|k| k.starts_with(&row.key)) => {}
                    other => problems.push(format!(
                        "{at}: `{env_name}` = {{ {PROBE} = 1 }} should be refused naming the key, got {:?}",
                        other.map(|_| "a valid config").map_err(|e| e.to_string())
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{DOC} and the config types disagree:\n\n{}\n", problems.join("\n\n"));
}
