//! What a GraphQL document may cost, checked before async-graphql validates it.
//!
//! async-graphql's validation rules (and its own recursion-depth check) walk a document with
//! every fragment spread expanded in place, and the depth and complexity limits judge only the
//! result of that walk: a kilobyte of fragments that each spread the next one twice is 2^22
//! fields to walk, seconds of CPU on the async runtime. [`check`] refuses such documents in time
//! linear in their length:
//!
//! 1. a scan of the text refuses brackets nested deeper than [`MAX_NESTING`] (so the recursive
//!    parser never goes deep);
//! 2. the document is parsed once (the parsed document is handed on to async-graphql, which
//!    does not parse it again);
//! 3. written size is capped: operations, fragment definitions, selections, aliases;
//! 4. the *expanded* size (fields, spreads and inline fragments after substituting every
//!    spread) is computed with one memoised pass per fragment definition, saturating, and
//!    capped at [`MAX_EXPANDED`]; a fragment cycle is refused here too.
//!
//! [`Cost::steps`] counts the work the check did (a deterministic measure for tests: it stays
//! linear in the document's size whatever the document).

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Positioned};

/// Deepest nesting of `{`, `[` and `(` in the text.
pub const MAX_NESTING: usize = 48;
/// Most operations in one document.
pub const MAX_OPERATIONS: usize = 16;
/// Most fragment definitions in one document.
pub const MAX_FRAGMENTS: usize = 32;
/// Most selections (fields, spreads, inline fragments) as written.
pub const MAX_SELECTIONS: u64 = 500;
/// Most aliased fields as written.
pub const MAX_ALIASES: u64 = 64;
/// Most selections once every fragment spread is expanded.
pub const MAX_EXPANDED: u64 = 2_000;

/// Why a document was refused before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostError {
    /// Not a GraphQL document (the parser's message).
    Syntax(String),
    /// Brackets nested deeper than [`MAX_NESTING`].
    TooDeep,
    /// More than [`MAX_OPERATIONS`] operations.
    TooManyOperations,
    /// More than [`MAX_FRAGMENTS`] fragment definitions.
    TooManyFragments,
    /// More than [`MAX_SELECTIONS`] selections as written.
    TooManySelections,
    /// More than [`MAX_ALIASES`] aliases.
    TooManyAliases,
    /// More than [`MAX_EXPANDED`] selections with fragments expanded.
    TooLargeExpanded,
    /// A fragment spreads itself, directly or not.
    FragmentCycle,
}

impl CostError {
    /// Stable machine-readable code (`extensions.code`).
    pub fn code(&self) -> &'static str {
        match self {
            CostError::Syntax(_) => "GRAPHQL_PARSE_FAILED",
            _ => "QUERY_TOO_COSTLY",
        }
    }

    /// What the caller is told.
    pub fn message(&self) -> String {
        match self {
            CostError::Syntax(why) => format!("not a GraphQL document: {why}"),
            CostError::TooDeep => format!("the document nests brackets deeper than {MAX_NESTING}"),
            CostError::TooManyOperations => format!("more than {MAX_OPERATIONS} operations in one document"),
            CostError::TooManyFragments => format!("more than {MAX_FRAGMENTS} fragment definitions"),
            CostError::TooManySelections => format!("more than {MAX_SELECTIONS} selections"),
            CostError::TooManyAliases => format!("more than {MAX_ALIASES} aliases"),
            CostError::TooLargeExpanded => {
                format!("more than {MAX_EXPANDED} selections once fragments are expanded")
            }
            CostError::FragmentCycle => "a fragment spreads itself".into(),
        }
    }
}

/// What a document that passed costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Selections with every spread expanded (what validation will walk).
    pub expanded: u64,
    /// Units of work this check did: characters scanned plus selections and fragment
    /// definitions visited (each once).
    pub steps: u64,
}

/// Checks `query` and returns its parsed document (for `Request::set_parsed_query`).
///
/// # Errors
///
/// [`CostError`] for a document that is malformed or would cost too much to validate.
pub fn check(query: &str) -> Result<(ExecutableDocument, Cost), CostError> {
    let mut steps = nesting_within(query, MAX_NESTING)?;
    let document = async_graphql::parser::parse_query(query).map_err(|e| CostError::Syntax(e.to_string()))?;
    let cost = document_cost(&document)?;
    steps = steps.saturating_add(cost.steps);
    Ok((document, Cost { expanded: cost.expanded, steps }))
}

/// Scans the text once: refuses `{`, `[`, `(` nested deeper than `max` outside strings and
/// comments. Returns the characters scanned.
fn nesting_within(query: &str, max: usize) -> Result<u64, CostError> {
    let bytes = query.as_bytes();
    let (mut depth, mut index) = (0usize, 0usize);
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'#' => {
                while bytes.get(index).is_some_and(|b| *b != b'\n' && *b != b'\r') {
                    index += 1;
                }
            }
            b'"' if bytes.get(index..index + 3) == Some(b"\"\"\"") => {
                index += 3;
                loop {
                    match bytes.get(index) {
                        None => break,
                        Some(b'\\') if bytes.get(index + 1..index + 4) == Some(b"\"\"\"") => index += 4,
                        Some(b'"') if bytes.get(index..index + 3) == Some(b"\"\"\"") => {
                            index += 2;
                            break;
                        }
                        Some(_) => index += 1,
                    }
                }
            }
            b'"' => {
                index += 1;
                loop {
                    match bytes.get(index) {
                        None | Some(b'"') | Some(b'\n') => break,
                        Some(b'\\') => index += 2,
                        Some(_) => index += 1,
                    }
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max {
                    return Err(CostError::TooDeep);
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    Ok(u64::try_from(bytes.len()).unwrap_or(u64::MAX))
}

/// Memoised size of each fragment definition, expanded.
enum Memo {
    InProgress,
    Done(u64),
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    memo: HashMap<&'a Name, Memo>,
    steps: u64,
}

impl<'a> Walk<'a> {
    /// Expanded size of a selection set (saturating).
    fn set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<u64, CostError> {
        let mut size = 0u64;
        for item in &set.node.items {
            self.steps = self.steps.saturating_add(1);
            let inner = match &item.node {
                Selection::Field(field) => self.set(&field.node.selection_set)?,
                Selection::InlineFragment(fragment) => self.set(&fragment.node.selection_set)?,
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node)?,
            };
            size = size.saturating_add(1).saturating_add(inner);
            if size > MAX_EXPANDED {
                return Err(CostError::TooLargeExpanded);
            }
        }
        Ok(size)
    }

    /// Expanded size of fragment `name` (0 when undefined: validation reports it).
    fn fragment(&mut self, name: &'a Name) -> Result<u64, CostError> {
        match self.memo.get(name) {
            Some(Memo::Done(size)) => return Ok(*size),
            Some(Memo::InProgress) => return Err(CostError::FragmentCycle),
            None => {}
        }
        let Some((key, definition)) = self.document.fragments.get_key_value(name) else {
            return Ok(0);
        };
        self.steps = self.steps.saturating_add(1);
        self.memo.insert(key, Memo::InProgress);
        let size = self.set(&definition.node.selection_set)?;
        self.memo.insert(key, Memo::Done(size));
        Ok(size)
    }
}

/// Written selections and aliases of a selection set (no expansion).
fn written(set: &Positioned<SelectionSet>, selections: &mut u64, aliases: &mut u64) {
    for item in &set.node.items {
        *selections = selections.saturating_add(1);
        match &item.node {
            Selection::Field(field) => {
                if field.node.alias.is_some() {
                    *aliases = aliases.saturating_add(1);
                }
                written(&field.node.selection_set, selections, aliases);
            }
            Selection::InlineFragment(fragment) => written(&fragment.node.selection_set, selections, aliases),
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// The cost of a parsed document, or why it is refused. async-graphql's rules walk each
/// fragment definition once as written, and each operation with its spreads expanded (depth,
/// complexity, the recursion-depth check): the written size and the operations' expanded size
/// are what is capped.
///
/// # Errors
///
/// [`CostError`] when a cap is exceeded or a fragment spreads itself.
pub fn document_cost(document: &ExecutableDocument) -> Result<Cost, CostError> {
    if document.operations.iter().len() > MAX_OPERATIONS {
        return Err(CostError::TooManyOperations);
    }
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(CostError::TooManyFragments);
    }
    let (mut selections, mut aliases) = (0u64, 0u64);
    let sets = document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set)
        .chain(document.fragments.values().map(|fragment| &fragment.node.selection_set));
    for set in sets {
        written(set, &mut selections, &mut aliases);
    }
    if selections > MAX_SELECTIONS {
        return Err(CostError::TooManySelections);
    }
    if aliases > MAX_ALIASES {
        return Err(CostError::TooManyAliases);
    }
    let mut walk = Walk { document, memo: HashMap::new(), steps: selections };
    let mut expanded = 0u64;
    for (_, operation) in document.operations.iter() {
        expanded = expanded.saturating_add(walk.set(&operation.node.selection_set)?);
        if expanded > MAX_EXPANDED {
            return Err(CostError::TooLargeExpanded);
        }
    }
    for name in document.fragments.keys() {
        // Cycles in unused fragments too (async-graphql's recursion-depth check would expand
        // them up to its depth limit); fragments already walked are memoised.
        walk.fragment(name)?;
    }
    Ok(Cost { expanded, steps: walk.steps })
}

/// The fragment-spread bomb: `levels` fragments, each spreading the next one twice; about
/// 40 bytes a level, 2^levels fields expanded.
pub fn fragment_bomb(levels: usize) -> String {
    let mut query = String::from("query { ...F0 }\n");
    for level in 0..levels {
        let next = level + 1;
        if next == levels {
            query.push_str(&format!("fragment F{level} on Query {{ me {{ role }} me {{ actor }} }}\n"));
        } else {
            query.push_str(&format!("fragment F{level} on Query {{ ...F{next} ...F{next} }}\n"));
        }
    }
    query
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ordinary_queries_pass_with_their_expanded_size() {
        let (_, cost) = check("{ me { role } counts { events } }").unwrap();
        assert_eq!(cost.expanded, 4);
        let (_, cost) = check(
            "query Q($id: ID!) { event(id: $id) { ...E deliveries { ...D } } }
             fragment E on Event { id eventType }
             fragment D on Delivery { id status }",
        )
        .unwrap();
        // event, spread E (2), deliveries, spread D (2) = 1 + 1 + 2 + 1 + 1 + 2.
        assert_eq!(cost.expanded, 8);
    }

    #[test]
    fn the_fragment_bomb_is_refused_after_linear_work() {
        let bomb = fragment_bomb(22);
        assert!(bomb.len() < 1_200, "about a kilobyte: {}", bomb.len());
        let started = std::time::Instant::now();
        assert_eq!(check(&bomb).unwrap_err(), CostError::TooLargeExpanded);
        assert!(started.elapsed() < std::time::Duration::from_millis(200), "{:?}", started.elapsed());
        // Just under the cap, the work done is still proportional to the text, not to 2^levels.
        let (_, cost) = check(&fragment_bomb(9)).unwrap();
        assert!(cost.expanded > 1_000, "{cost:?}");
        assert!(cost.steps < 2 * fragment_bomb(9).len() as u64, "{cost:?}");
    }

    #[test]
    fn cycles_and_written_caps_are_refused() {
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert_eq!(check(cycle).unwrap_err(), CostError::FragmentCycle);
        let selfish = "{ ...A } fragment A on Query { me { role } ...A }";
        assert_eq!(check(selfish).unwrap_err(), CostError::FragmentCycle);
        let fragments: String =
            (0..=MAX_FRAGMENTS).map(|n| format!("fragment F{n} on Query {{ me {{ role }} }}\n")).collect();
        assert_eq!(check(&format!("{{ me {{ role }} }}\n{fragments}")).unwrap_err(), CostError::TooManyFragments);
        let aliases: String = (0..=MAX_ALIASES).map(|n| format!("a{n}: me {{ role }} ")).collect();
        assert_eq!(check(&format!("{{ {aliases} }}")).unwrap_err(), CostError::TooManyAliases);
        let wide: String = (0..=MAX_SELECTIONS).map(|_| "me ").collect();
        assert_eq!(check(&format!("{{ {wide} }}")).unwrap_err(), CostError::TooManySelections);
        let operations: String = (0..=MAX_OPERATIONS).map(|n| format!("query Q{n} {{ me {{ role }} }}\n")).collect();
        assert_eq!(check(&operations).unwrap_err(), CostError::TooManyOperations);
        assert!(matches!(check("{ me { role }"), Err(CostError::Syntax(_))));
        assert!(matches!(check(""), Err(CostError::Syntax(_))));
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        let deep = format!("{}{}", "{ a ".repeat(20_000), "}".repeat(20_000));
        assert_eq!(check(&deep).unwrap_err(), CostError::TooDeep);
        let deep_value = format!("{{ events(filter: {}) {{ nodes {{ id }} }} }}", "[".repeat(30_000));
        assert_eq!(check(&deep_value).unwrap_err(), CostError::TooDeep);
        // Brackets in strings, block strings and comments do not count.
        let quoted = format!(
            "# {}\n{{ events(filter: {{text: \"{}\\\"\"}}) {{ nodes {{ id }} }} }} # {}",
            "{".repeat(100),
            "[".repeat(100),
            "(".repeat(100)
        );
        check(&quoted).unwrap();
        let block =
            format!("{{ events(filter: {{text: \"\"\"{}\\\"\"\"\"\"\"}}) {{ nodes {{ id }} }} }}", "{".repeat(100));
        check(&block).unwrap();
    }
}

/// GraphQL documents, fuzzed: a seeded generator (stable, part of `cargo test`;
/// `INLET_FUZZ_SEED` and `INLET_FUZZ_ITERATIONS` replay or widen a run) and the committed
/// documents in `worker/tests/graphql_documents/`, all through one oracle: [`check`] never
/// panics, its work is linear in the document's length, and its verdict is the one a naive
/// expansion (bounded by the cap, so it stays cheap) reaches.
#[cfg(test)]
mod fuzzing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
    use async_graphql::{Name, Positioned};

    use super::{CostError, MAX_EXPANDED, check};

    /// Naive expansion, stopping once past `budget` (it returns `None` then, as for a cycle).
    fn naive(
        document: &ExecutableDocument,
        set: &Positioned<SelectionSet>,
        path: &mut Vec<Name>,
        budget: &mut u64,
    ) -> Option<u64> {
        let mut size = 0u64;
        for item in &set.node.items {
            *budget = budget.checked_sub(1)?;
            size += 1;
            size += match &item.node {
                Selection::Field(field) => naive(document, &field.node.selection_set, path, budget)?,
                Selection::InlineFragment(fragment) => naive(document, &fragment.node.selection_set, path, budget)?,
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match document.fragments.get(name) {
                        None => 0,
                        Some(_) if path.contains(name) => return None,
                        Some(definition) => {
                            path.push(name.clone());
                            let inner = naive(document, &definition.node.selection_set, path, budget);
                            path.pop();
                            inner?
                        }
                    }
                }
            };
        }
        Some(size)
    }

    /// The oracle for one document; returns the verdict.
    pub(super) fn document(query: &str) -> Result<(), CostError> {
        let verdict = check(query);
        let length = query.len() as u64;
        if let Ok((_, cost)) = &verdict {
            assert!(cost.steps <= 3 * length + 16, "work not linear: {cost:?} for {length} bytes");
        }
        let parsed = match (&verdict, async_graphql::parser::parse_query(query)) {
            (_, Ok(parsed)) => parsed,
            (Ok(_), Err(_)) => panic!("accepted what does not parse: {query}"),
            (Err(error), Err(_)) => return Err(error.clone()),
        };
        // Within the cap, every operation and every fragment on its own.
        let mut operations = 0u64;
        let mut within = true;
        let mut budget = MAX_EXPANDED;
        for (_, operation) in parsed.operations.iter() {
            match naive(&parsed, &operation.node.selection_set, &mut Vec::new(), &mut budget) {
                Some(size) => operations += size,
                None => within = false,
            }
        }
        let fragments: HashMap<&Name, Option<u64>> = parsed
            .fragments
            .iter()
            .map(|(name, definition)| {
                let mut budget = MAX_EXPANDED;
                (name, naive(&parsed, &definition.node.selection_set, &mut vec![name.clone()], &mut budget))
            })
            .collect();
        within &= operations <= MAX_EXPANDED && fragments.values().all(Option::is_some);
        match &verdict {
            Ok((_, cost)) => {
                assert!(within, "accepted, yet the naive expansion is past the cap or cyclic: {query}");
                assert_eq!(cost.expanded, operations, "{query}");
            }
            Err(CostError::TooLargeExpanded | CostError::FragmentCycle) => {
                assert!(!within, "refused, yet the naive expansion is {operations}: {query}");
            }
            Err(_) => {}
        }
        verdict.map(|_| ())
    }

    /// xorshift64*: small, deterministic, enough to shape documents.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    const FIELDS: &[&str] = &["me", "counts", "events", "deliveries", "content", "__typename", "id", "role"];

    fn selection_set(rng: &mut Rng, depth: u32, fragments: usize, own: usize, out: &mut String) {
        out.push_str("{ ");
        for _ in 0..=rng.below(4) {
            match rng.below(10) {
                0..=2 if fragments > 0 => {
                    // Mostly towards later fragments (a DAG, possibly a bomb), now and then anywhere
                    // (cycles).
                    let target = if rng.below(8) == 0 {
                        rng.below(fragments as u64) as usize
                    } else {
                        own + 1 + rng.below(fragments.saturating_sub(own + 1).max(1) as u64) as usize
                    };
                    let times = 1 + rng.below(3);
                    for _ in 0..times {
                        out.push_str(&format!("...F{target} "));
                    }
                }
                3 if depth > 0 => {
                    out.push_str("... on Query ");
                    selection_set(rng, depth - 1, fragments, own, out);
                }
                _ => {
                    if rng.below(4) == 0 {
                        out.push_str(&format!("a{}: ", rng.below(100)));
                    }
                    out.push_str(FIELDS[rng.below(FIELDS.len() as u64) as usize]);
                    match rng.below(6) {
                        0 => out.push_str("(first: 3, filter: { text: \"}{][)(\" }) "),
                        1 => {
                            let depth = if rng.below(30) == 0 { rng.below(60) } else { rng.below(6) } as usize;
                            out.push_str(&format!("(x: {}1{}) ", "[".repeat(depth), "]".repeat(depth)));
                        }
                        2 => out.push_str(" # } { comment\n"),
                        _ => out.push(' '),
                    }
                    if depth > 0 && rng.below(2) == 0 {
                        selection_set(rng, depth - 1, fragments, own, out);
                    }
                }
            }
        }
        out.push_str("} ");
    }

    fn generate(rng: &mut Rng) -> String {
        let fragments = rng.below(40) as usize;
        let mut out = String::new();
        for operation in 0..=rng.below(3) {
            out.push_str(&format!("query Q{operation} "));
            selection_set(rng, 3, fragments, usize::MAX - 1, &mut out);
        }
        for own in 0..fragments {
            out.push_str(&format!("fragment F{own} on Query "));
            selection_set(rng, 2, fragments, own, &mut out);
        }
        // Byte-level damage now and then: the parser's error paths, unbalanced brackets.
        if rng.below(4) == 0 && !out.is_empty() {
            let at = rng.below(out.len() as u64) as usize;
            if out.is_char_boundary(at) {
                let junk = ["{", "}", "[", "\"", "\"\"\"", "#", "...", "\\", "fragment", ")"];
                out.insert_str(at, junk[rng.below(junk.len() as u64) as usize]);
            }
        }
        out
    }

    #[test]
    fn generated_documents_are_judged_in_linear_work_and_agree_with_a_naive_expansion() {
        let seed = std::env::var("INLET_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9E37_79B9_7F4A_7C15);
        let iterations = std::env::var("INLET_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
        let mut rng = Rng(seed | 1);
        let mut verdicts: HashMap<String, usize> = HashMap::new();
        for case in 0..iterations {
            let query = generate(&mut rng);
            let outcome = std::panic::catch_unwind(|| document(&query));
            let verdict = match outcome.unwrap_or_else(|_| panic!("seed {seed}, case {case}: {query}")) {
                Ok(_) => "accepted".to_owned(),
                Err(CostError::Syntax(_)) => "syntax".to_owned(),
                Err(error) => format!("{error:?}"),
            };
            *verdicts.entry(verdict).or_default() += 1;
        }
        eprintln!("graphql documents (seed {seed}): {verdicts:?}");
        // The generator reaches both sides of every cap that matters here.
        for verdict in ["accepted", "TooLargeExpanded", "FragmentCycle", "TooDeep"] {
            assert!(verdicts.get(verdict).is_some_and(|n| *n >= iterations / 50), "{verdict}: {verdicts:?}");
        }
    }

    /// The committed documents (bombs, cycles, deep nesting, the console's own queries).
    #[test]
    fn committed_graphql_documents_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql_documents");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() >= 5, "{}", dir.display());
        for file in files {
            let query = std::fs::read_to_string(&file).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let verdict = document(&query).map_err(|e| e.code());
            let expected = if name.starts_with("refused-") { Err("QUERY_TOO_COSTLY") } else { Ok(()) };
            assert_eq!(verdict, expected, "{name}");
        }
    }
}
