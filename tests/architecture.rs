//! The shape of `src/`, checked on every test run: the layer order between top-level modules
//! (the `LAYERS` table below), no import circles between files or between top-level modules,
//! no file over 600 lines, and `lib.rs` listing every module it declares on a line of its own.
//!
//! Every path that starts with `crate::`, `super::` or `self::` is read from the code, in `use`
//! trees (grouped and nested) and inline; comments, doc comments and string and char literals
//! are ignored. Each is resolved to the file of the longest module prefix it names. Paths
//! relative to the current module without `self::` (`use worker::Outbox` in a `mod.rs`) are not
//! read: they only reach the module's own children, and reading them would make every `mod.rs`
//! that re-exports a child a circle with it. `main.rs` is the binary: its paths name its own
//! crate, and it may import anything.
//!
//! With `HERALD_ARCH_REPORT=1` the `report` test prints a summary of the import graph (run with
//! `-- --nocapture --test-threads=1`); the other tests assert as always. With
//! `HERALD_ARCH_ROOT=dir` it reads another checkout (a directory with `src/` and `tests/`).
//! The checker is hand-written with std only, so it adds no dependency; its parser and its
//! circle detection have tests of their own at the bottom of this file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The layer order: each top-level module of `src/` and the top-level modules it may import
/// (imports within a module are always allowed). `"*"` allows anything. A module missing here
/// fails the test, so a new module is placed deliberately.
#[rustfmt::skip]
const LAYERS: &[(&str, &[&str])] = &[
    // The bottom: types and rules without I/O, and the one reader of the time.
    ("domain",      &[]),
    ("clock",       &[]),
    // Leaf utilities.
    ("crypto",      &["domain", "clock"]),
    ("tls",         &["domain", "clock"]),
    ("net",         &["domain", "clock"]),
    ("metrics",     &["domain", "clock"]),
    ("trace",       &["domain", "clock", "crypto"]),
    // Adapters: the outside world. They may use each other's leaf types (circles between them
    // are caught by the circle check).
    ("store",       &["domain", "clock", "crypto", "tls", "net", "metrics", "oauth", "smtp", "smtp_server", "secrets"]),
    ("oauth",       &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "store", "smtp", "smtp_server", "secrets"]),
    ("smtp",        &["domain", "clock", "crypto", "tls", "net", "metrics", "store", "oauth", "smtp_server", "secrets"]),
    ("smtp_server", &["domain", "clock", "crypto", "tls", "net", "metrics", "store", "oauth", "smtp", "secrets"]),
    ("secrets",     &["domain", "clock", "crypto", "tls", "net", "metrics", "store", "oauth", "smtp", "smtp_server"]),
    // The development sandbox: ready to become a crate of its own (so not even domain today).
    ("sandbox",     &["smtp_server", "tls", "crypto", "clock"]),
    // Settings: may name the adapters' and the sandbox's settings types.
    ("config",      &["domain", "clock", "crypto", "tls", "net", "metrics", "store", "oauth", "smtp", "smtp_server", "secrets", "sandbox"]),
    // The master key ring (domain is everyone's).
    ("keys",        &["config", "store", "secrets", "crypto", "clock", "domain"]),
    // A mailbox's live access: credentials, tokens, transports.
    ("access",      &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "store", "oauth", "smtp", "smtp_server", "secrets", "config", "keys"]),
    // The queue's workers: never the services.
    ("outbox",      &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "store", "oauth", "smtp", "smtp_server", "secrets", "config", "access"]),
    // Use cases.
    ("services",    &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "store", "oauth", "smtp", "smtp_server", "secrets", "config", "keys", "access", "outbox"]),
    // The edges: they reach the core through the services only. The relay is an
    // `smtp_server::SmtpHandler`, as web is an axum router.
    ("web",         &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "config", "services", "sandbox"]),
    ("relay",       &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "config", "services", "sandbox", "smtp_server"]),
    // The composition root builds everything; the command line calls it.
    ("app",         &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "store", "oauth", "smtp", "smtp_server", "secrets", "sandbox", "config", "keys", "access", "outbox", "services", "web", "relay"]),
    ("cli",         &["domain", "clock", "crypto", "tls", "net", "metrics", "trace", "config", "sandbox", "services", "app"]),
    // The binary.
    ("main",        &["*"]),
];

/// The handles an edge may hold without reaching into the layer behind them: the one bundle of
/// dependencies (`Access`) and the outbox's handle (to wake it when mail was accepted). Only
/// these exact paths; everything else the edges do goes through the services.
#[rustfmt::skip]
const HANDLES: &[(&str, &str)] = &[
    ("web",   "crate::access::Access"),
    ("web",   "crate::outbox::Outbox"),
    ("relay", "crate::outbox::Outbox"),
    ("cli",   "crate::access::Access"),
    ("cli",   "crate::outbox::Outbox"),
];

/// No file in `src/` may be longer than this (in lines).
const MAX_LINES: usize = 600;

/// What reads the time or waits on it; counted outside `src/clock.rs` for the report.
const TIME_READINGS: &[(&str, &[&str])] = &[
    (
        "OffsetDateTime::now_utc",
        &["OffsetDateTime", "::", "now_utc"],
    ),
    ("now_utc()", &["now_utc", "("]),
    ("SystemTime::now", &["SystemTime", "::", "now"]),
    ("Instant::now", &["Instant", "::", "now"]),
    ("thread::sleep", &["thread", "::", "sleep"]),
    ("time::sleep (tokio)", &["time", "::", "sleep"]),
];

// ------------------------------------------------------------------------------------------
// The checks.

#[test]
fn layer_rules_hold() {
    let problems = layer_violations(analysis());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_import_circles() {
    let a = analysis();
    let mut lines = circles_between_modules(a);
    lines.extend(circles_between_files(a));
    assert!(lines.is_empty(), "import circles:\n{}", lines.join("\n"));
}

#[test]
fn no_file_over_600_lines() {
    let mut long: Vec<&Source> = analysis()
        .files
        .iter()
        .filter(|f| f.lines > MAX_LINES)
        .collect();
    long.sort_by(|a, b| b.lines.cmp(&a.lines).then(a.rel.cmp(&b.rel)));
    let lines: Vec<String> = long
        .iter()
        .map(|f| format!("  {}: {} lines", f.rel, f.lines))
        .collect();
    assert!(
        lines.is_empty(),
        "{} files in src/ are over {MAX_LINES} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

#[test]
fn lib_rs_lists_every_module() {
    let a = analysis();
    let lib = a
        .files
        .iter()
        .find(|f| f.rel == "src/lib.rs")
        .expect("src/lib.rs");
    let problems = lib_doc_problems(&lib.text, &lib.tokens);
    assert!(
        problems.is_empty(),
        "src/lib.rs must list each module it declares on a line of its own, \
         `//! - [`name`]: what it owns`:\n{}",
        problems.join("\n")
    );
}

/// Prints the import graph's summary when `HERALD_ARCH_REPORT=1`; the other tests still assert.
#[test]
fn report() {
    if std::env::var_os("HERALD_ARCH_REPORT").is_some_and(|v| v == "1") {
        println!("{}", render_report(analysis()));
    }
}

// ------------------------------------------------------------------------------------------
// Reading `src/`.

struct Source {
    /// `src/outbox/mod.rs`.
    rel: String,
    /// `outbox::compose`; empty for the crate root; `main` for the binary.
    module: String,
    /// The top-level module (`outbox`); empty for the crate root.
    top: String,
    text: String,
    lines: usize,
    tokens: Vec<Token>,
}

impl Source {
    fn is_binary(&self) -> bool {
        self.rel == "src/main.rs"
    }
}

struct Import {
    from: usize,
    to: usize,
    line: usize,
    /// As written, `crate::services::Deps`.
    path: String,
}

struct Analysis {
    files: Vec<Source>,
    /// Between different files, in file order.
    imports: Vec<Import>,
    /// The tokens of each file of `tests/` (for the report's count of sleeps).
    test_tokens: Vec<Vec<Token>>,
}

fn analysis() -> &'static Analysis {
    static ANALYSIS: OnceLock<Analysis> = OnceLock::new();
    ANALYSIS.get_or_init(|| {
        let root = std::env::var_os("HERALD_ARCH_ROOT")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        analyse(&root)
    })
}

fn analyse(root: &Path) -> Analysis {
    let sources = rust_files(&root.join("src"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let rel_to_src = path.strip_prefix(root.join("src")).expect("under src");
            (slashed(rel_to_src), text)
        })
        .collect();
    let test_tokens = rust_files(&root.join("tests"))
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| tokenize(&strip(&text)))
        .collect();
    Analysis {
        test_tokens,
        ..read_sources(sources)
    }
}

/// The files (paths relative to `src/`, with `/`) and the imports between them.
fn read_sources(sources: Vec<(String, String)>) -> Analysis {
    let mut files = Vec::new();
    for (rel_to_src, text) in sources {
        let module = module_path(Path::new(&rel_to_src));
        let top = module.split("::").next().unwrap_or_default().to_string();
        files.push(Source {
            rel: format!("src/{rel_to_src}"),
            module,
            top,
            lines: text.lines().count(),
            tokens: tokenize(&strip(&text)),
            text,
        });
    }
    let by_module: BTreeMap<&str, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_binary())
        .map(|(i, f)| (f.module.as_str(), i))
        .collect();
    let mut imports = Vec::new();
    for (from, file) in files.iter().enumerate() {
        // `crate::` in the binary names the binary's own modules, and it may import anything.
        if file.is_binary() {
            continue;
        }
        for used in module_paths(&file.tokens, &file.module) {
            let Some(to) = resolve(&used.absolute, |m| by_module.get(m).copied()) else {
                continue;
            };
            if to != from {
                imports.push(Import {
                    from,
                    to,
                    line: used.line,
                    path: used.written,
                });
            }
        }
    }
    Analysis {
        files,
        imports,
        test_tokens: Vec::new(),
    }
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn slashed(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// `a/b.rs` and `a/b/mod.rs` → `a::b`; `lib.rs` → `` (the crate root); `main.rs` → `main`.
fn module_path(rel_to_src: &Path) -> String {
    let mut parts: Vec<String> = rel_to_src
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    match (parts.is_empty(), stem) {
        (true, "lib") => String::new(),
        (_, "mod") => parts.join("::"),
        _ => {
            parts.push(stem.to_string());
            parts.join("::")
        }
    }
}

/// The file of the longest prefix of `segments` that is a module; the crate root at worst.
fn resolve(segments: &[String], module: impl Fn(&str) -> Option<usize>) -> Option<usize> {
    (0..=segments.len())
        .rev()
        .find_map(|k| module(&segments[..k].join("::")))
}

// ------------------------------------------------------------------------------------------
// The parser: blank out comments and literals, split into tokens, read `crate::` paths.

/// The source with comments (line, block, nested, doc) and string, byte-string, raw-string and
/// char literals replaced by spaces; newlines are kept, so lines still count. Lifetimes and
/// labels (`'a`) are kept.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        match skip_end(&c, i) {
            Some(end) => {
                blank(&mut out, &c[i..end]);
                i = end;
            }
            None => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// The end of the comment or literal starting at `i`, if one does.
fn skip_end(c: &[char], i: usize) -> Option<usize> {
    match (c[i], c.get(i + 1)) {
        ('/', Some('/')) => Some(
            c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |p| i + p),
        ),
        ('/', Some('*')) => Some(block_comment_end(c, i)),
        ('"', _) => Some(quoted_end(c, i, '"')),
        ('\'', _) => char_literal_end(c, i),
        ('r', _) => raw_string_end(c, i),
        _ => None,
    }
}

fn is_ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

fn block_comment_end(c: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// The end of `"…"` (or `'…'`) starting at `start`, escapes honoured.
fn quoted_end(c: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            ch if ch == quote => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// `r"…"`, `r#"…"#`, `br##"…"##`, `cr"…"` starting at `start` (at the `r`); `None` if it is not
/// one (`r#type` is a raw identifier, `for` ends in an `r`).
fn raw_string_end(c: &[char], start: usize) -> Option<usize> {
    if c[start] != 'r' {
        return None;
    }
    let before = |k: usize| start.checked_sub(k).map(|j| c[j]);
    let prefixed = matches!(before(1), Some('b' | 'c'));
    let word_start = if prefixed { before(2) } else { before(1) };
    if word_start.is_some_and(is_ident_char) {
        return None;
    }
    let mut i = start + 1;
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    if c.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(c.len())
}

/// `'x'`, `'\n'`, `'\u{1F600}'`, `'\''` starting at `start`; `None` for a lifetime or label.
fn char_literal_end(c: &[char], start: usize) -> Option<usize> {
    match (c.get(start + 1), c.get(start + 2)) {
        (Some('\\'), _) => Some(quoted_end(c, start, '\'')),
        (Some(&ch), Some('\'')) if ch != '\'' => Some(start + 3),
        _ => None,
    }
}

#[derive(Clone, Debug)]
struct Token {
    text: String,
    line: usize,
}

/// Identifiers (raw ones without their `r#`), numbers, `::` and single punctuation characters.
fn tokenize(stripped: &str) -> Vec<Token> {
    let c: Vec<char> = stripped.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let mut j = i;
            // A raw identifier, `r#type`.
            if ch == 'r'
                && c.get(i + 1) == Some(&'#')
                && c.get(i + 2).is_some_and(|&n| is_ident_char(n))
            {
                j += 2;
            }
            let begin = j;
            while j < c.len() && is_ident_char(c[j]) {
                j += 1;
            }
            tokens.push(Token {
                text: c[begin..j].iter().collect(),
                line,
            });
            i = j;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|ch: char| ch.is_alphabetic() || ch == '_') && s.chars().all(is_ident_char)
}

/// A path read from the code.
struct PathUse {
    line: usize,
    /// As written: `super::message::Limits`.
    written: String,
    /// From the crate root: `domain::message::Limits`.
    absolute: Vec<String>,
}

/// Every path starting with `crate::`, `super::` or `self::` in a file of module `module`, with
/// the line of its first word. A use tree gives one path per leaf: `crate::{a::{b, self}, c::*}`
/// gives `crate::a::b`, `crate::a` and `crate::c`. `super` and `self` count from the module the
/// path is in, inline `mod name { … }` blocks included. `$crate::`, `pub(crate)`,
/// `pub(super)` and `pub(in …)` are not imports.
fn module_paths(tokens: &[Token], module: &str) -> Vec<PathUse> {
    let text = |i: usize| tokens.get(i).map(|t| t.text.as_str());
    let file_scope = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from);
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token.text.as_str() {
            "{" => {
                if i >= 2 && text(i - 2) == Some("mod") && is_ident(&tokens[i - 1].text) {
                    inline.push((tokens[i - 1].text.clone(), depth));
                }
                depth += 1;
                continue;
            }
            "}" => {
                depth = usize::max(depth, 1) - 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                continue;
            }
            "crate" | "super" | "self" => {}
            _ => continue,
        }
        if text(i + 1) != Some("::") || (i > 0 && matches!(text(i - 1), Some("$" | "::" | "in"))) {
            continue;
        }
        let mut leaves = Vec::new();
        use_tree(tokens, i + 2, &mut vec![token.text.clone()], &mut leaves);
        let scope: Vec<String> = file_scope
            .clone()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        for leaf in leaves {
            if let Some(absolute) = absolute(&leaf, &scope) {
                out.push(PathUse {
                    line: token.line,
                    written: leaf.join("::"),
                    absolute,
                });
            }
        }
    }
    out
}

/// `crate::a::b` → `a::b`; `super::c` in `x::y` → `x::c`; `self::d` in `x` → `x::d`; `None` for
/// a `super` above the crate root.
fn absolute(leaf: &[String], scope: &[String]) -> Option<Vec<String>> {
    match leaf.first().map(String::as_str) {
        Some("crate") => Some(leaf[1..].to_vec()),
        Some("self") => Some(scope.iter().chain(&leaf[1..]).cloned().collect()),
        Some("super") => {
            let ups = leaf.iter().take_while(|s| *s == "super").count();
            let kept = scope.len().checked_sub(ups)?;
            Some(scope[..kept].iter().chain(&leaf[ups..]).cloned().collect())
        }
        _ => None,
    }
}

/// Reads the tree at `i` below `prefix` into `leaves`; returns the index after it.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<Vec<String>>,
) -> usize {
    let text = |i: usize| tokens.get(i).map(|t| t.text.as_str());
    let base = prefix.len();
    loop {
        match text(i) {
            Some("{") => {
                i += 1;
                loop {
                    match text(i) {
                        None => break,
                        Some("}") => {
                            i += 1;
                            break;
                        }
                        Some(",") => i += 1,
                        Some(_) => {
                            let next = use_tree(tokens, i, prefix, leaves);
                            i = next.max(i + 1);
                        }
                    }
                }
                break;
            }
            Some("*") => {
                leaves.push(prefix.clone());
                i += 1;
                break;
            }
            Some("self") => {
                leaves.push(prefix.clone());
                i += 1;
                if text(i) == Some("as") {
                    i += 2;
                }
                break;
            }
            Some(segment) if is_ident(segment) => {
                prefix.push(segment.to_string());
                i += 1;
                let continues = text(i) == Some("::")
                    && text(i + 1).is_some_and(|n| n == "{" || n == "*" || is_ident(n));
                if continues {
                    i += 1;
                    continue;
                }
                leaves.push(prefix.clone());
                if text(i) == Some("as") {
                    i += 2;
                }
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(base);
    i
}

// ------------------------------------------------------------------------------------------
// The layer rules.

fn allowed(from: &str) -> Option<&'static [&'static str]> {
    LAYERS.iter().find(|(m, _)| *m == from).map(|(_, a)| *a)
}

/// Imports that break the table: rule → (file, line) → the paths on that line.
type Breaks = BTreeMap<String, BTreeMap<(String, usize), BTreeSet<String>>>;

/// Whether the table forbids `from` (a top-level module) to import `to`.
fn forbidden(from: &str, to: &str) -> bool {
    allowed(from).is_some_and(|allow| !allow.contains(&"*") && !allow.contains(&to))
}

fn layer_breaks(a: &Analysis) -> Breaks {
    let mut breaks = Breaks::new();
    for imp in &a.imports {
        let (from, to) = (&a.files[imp.from], &a.files[imp.to]);
        if from.top.is_empty() || from.top == to.top {
            continue;
        }
        // A module missing from the table is reported by `table_problems`.
        if !forbidden(&from.top, &to.top)
            || HANDLES.contains(&(from.top.as_str(), imp.path.as_str()))
        {
            continue;
        }
        let rule = if to.top.is_empty() {
            format!(
                "{} may not import the crate root (src/lib.rs only declares modules)",
                from.top
            )
        } else {
            format!("{} may not import {}", from.top, to.top)
        };
        breaks
            .entry(rule)
            .or_default()
            .entry((from.rel.clone(), imp.line))
            .or_default()
            .insert(imp.path.clone());
    }
    breaks
}

/// The table's own problems, then one heading per broken rule and one line per importing line.
fn layer_violations(a: &Analysis) -> Vec<String> {
    let mut problems = table_problems(a);
    let breaks = layer_breaks(a);
    if !breaks.is_empty() {
        let count: usize = breaks.values().map(BTreeMap::len).sum();
        problems.push(format!(
            "{count} import lines break {} layer rules (the table is LAYERS in tests/architecture.rs):",
            breaks.len()
        ));
        for (rule, lines) in breaks {
            problems.push(format!("{rule} ({}):", lines.len()));
            for ((file, line), paths) in lines {
                problems.push(format!("  {file}:{line}  {}", compact(&paths)));
            }
        }
    }
    problems
}

/// The paths of one line as one use tree: `crate::store::{self, Store}`.
fn compact(paths: &BTreeSet<String>) -> String {
    let split: Vec<Vec<&str>> = paths.iter().map(|p| p.split("::").collect()).collect();
    let mut common = split[0].len();
    for s in &split[1..] {
        common = common.min(s.iter().zip(&split[0]).take_while(|(a, b)| a == b).count());
    }
    if split.len() == 1 || common == 0 {
        return paths.iter().cloned().collect::<Vec<_>>().join(", ");
    }
    let rests: Vec<String> = split
        .iter()
        .map(|s| {
            if s.len() == common {
                "self".to_string()
            } else {
                s[common..].join("::")
            }
        })
        .collect();
    format!(
        "{}::{{{}}}",
        split[0][..common].join("::"),
        rests.join(", ")
    )
}

/// Modules missing from the table, rows naming no module, unknown names in a row.
fn table_problems(a: &Analysis) -> Vec<String> {
    let mut problems = Vec::new();
    let mut tops: BTreeMap<&str, &str> = BTreeMap::new();
    for f in a.files.iter().filter(|f| !f.top.is_empty()) {
        tops.entry(f.top.as_str()).or_insert(f.rel.as_str());
    }
    for (top, file) in &tops {
        if allowed(top).is_none() {
            problems.push(format!(
                "module `{top}` ({file}) is not in the layer table: add it to LAYERS in tests/architecture.rs"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (module, allow) in LAYERS {
        if !seen.insert(*module) {
            problems.push(format!("LAYERS has `{module}` twice"));
        }
        if !tops.contains_key(module) {
            problems.push(format!(
                "LAYERS names `{module}`, which is no module of src/: remove or rename its row"
            ));
        }
        for name in allow.iter().filter(|n| **n != "*" && allowed(n).is_none()) {
            problems.push(format!(
                "LAYERS row `{module}` allows `{name}`, which has no row"
            ));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// Circles.

/// The strongly connected components of a graph on `0..adj.len()` (Tarjan), each sorted.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                self.out.push(component);
            }
        }
    }
    let n = adj.len();
    let mut t = Tarjan {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out
}

/// The components with more than one member, sorted by their first member.
fn circles(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out: Vec<_> = strongly_connected(adj)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    out.sort();
    out
}

/// A shortest walk from `start` back to `start` inside `members`: `[start, …, last]`, where
/// `last` imports `start`.
fn shortest_cycle(adj: &[Vec<usize>], members: &[usize], start: usize) -> Vec<usize> {
    let inside = |v: usize| members.contains(&v);
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in adj[v].iter().filter(|&&w| inside(w)) {
            if w == start {
                let mut path = vec![v];
                while let Some(&p) = parent.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                path.reverse();
                return path;
            }
            if w != start && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

/// An import graph whose nodes are files or top-level modules.
struct Graph<'a> {
    /// The nodes, sorted.
    names: Vec<String>,
    /// Sorted, without self edges.
    adj: Vec<Vec<usize>>,
    /// Per edge, the first import that makes it.
    evidence: BTreeMap<(usize, usize), &'a Import>,
}

/// The graph whose nodes are `node(file)`: imports between files that share a node are left out.
fn graph<'a>(a: &'a Analysis, node: impl Fn(&Source) -> String) -> Graph<'a> {
    let names: Vec<String> = a
        .files
        .iter()
        .map(&node)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let at = |f: &Source| names.binary_search(&node(f)).expect("a node");
    let mut evidence = BTreeMap::new();
    for imp in &a.imports {
        let (from, to) = (at(&a.files[imp.from]), at(&a.files[imp.to]));
        if from != to {
            evidence.entry((from, to)).or_insert(imp);
        }
    }
    let mut adj = vec![Vec::new(); names.len()];
    for &(from, to) in evidence.keys() {
        adj[from].push(to);
    }
    Graph {
        names,
        adj,
        evidence,
    }
}

/// One header line per circle, then one line per step round it with the import that makes it.
fn describe_circles(g: &Graph, files: &[Source], what: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for members in circles(&g.adj) {
        let listed: Vec<&str> = members.iter().map(|&m| g.names[m].as_str()).collect();
        lines.push(format!(
            "circle of {} {what}: {}",
            members.len(),
            listed.join(", ")
        ));
        if what == "modules" {
            let against: Vec<String> = members
                .iter()
                .flat_map(|&v| g.adj[v].iter().map(move |&w| (v, w)))
                .filter(|&(v, w)| members.contains(&w) && forbidden(&g.names[v], &g.names[w]))
                .map(|(v, w)| format!("{} -> {}", g.names[v], g.names[w]))
                .collect();
            if !against.is_empty() {
                lines.push(format!(
                    "  imports inside it that break the table: {}",
                    against.join(", ")
                ));
            }
        }
        let cycle = shortest_cycle(&g.adj, &members, members[0]);
        for (k, &v) in cycle.iter().enumerate() {
            let w = cycle[(k + 1) % cycle.len()];
            let imp = g.evidence[&(v, w)];
            lines.push(format!(
                "  {} -> {}  ({}:{} {})",
                g.names[v], g.names[w], files[imp.from].rel, imp.line, imp.path
            ));
        }
    }
    lines
}

fn circles_between_files(a: &Analysis) -> Vec<String> {
    let g = graph(a, |f| f.rel.clone());
    describe_circles(&g, &a.files, "files")
}

/// The crate root, if anything imports it, is the node `crate`.
fn circles_between_modules(a: &Analysis) -> Vec<String> {
    let g = graph(a, |f| {
        if f.top.is_empty() {
            "crate".to_string()
        } else {
            f.top.clone()
        }
    });
    describe_circles(&g, &a.files, "modules")
}

// ------------------------------------------------------------------------------------------
// `lib.rs`'s module list.

fn lib_doc_problems(text: &str, tokens: &[Token]) -> Vec<String> {
    let listed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once("`]").map(|(name, _)| name))
        .collect();
    let mut declared = BTreeSet::new();
    for w in tokens.windows(3) {
        if w[0].text == "mod" && is_ident(&w[1].text) && w[2].text == ";" {
            declared.insert(w[1].text.as_str());
        }
    }
    let mut problems: Vec<String> = declared
        .difference(&listed)
        .map(|m| format!("  `{m}` is declared but has no `//! - [`{m}`]` line"))
        .collect();
    problems.extend(
        listed
            .difference(&declared)
            .map(|m| format!("  `{m}` is listed but not declared")),
    );
    problems
}

// ------------------------------------------------------------------------------------------
// The report.

fn count_sequence(tokens: &[Token], seq: &[&str]) -> usize {
    tokens
        .windows(seq.len())
        .filter(|w| w.iter().zip(seq).all(|(t, s)| t.text == *s))
        .count()
}

fn or_none(lines: &[String]) -> String {
    if lines.is_empty() {
        "none".into()
    } else {
        lines.join("\n")
    }
}

fn render_report(a: &Analysis) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "== architecture report: {} files in src/, {} paths (crate::, super::, self::) from one file to another ==",
        a.files.len(),
        a.imports.len()
    );

    // Imports per top-level module.
    let _ = writeln!(
        r,
        "\n-- imports per top-level module (paths; ✗ breaks the layer table) --"
    );
    let mut per: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for f in a.files.iter().filter(|f| !f.top.is_empty()) {
        per.entry(f.top.as_str()).or_default();
    }
    for imp in &a.imports {
        let (from, to) = (&a.files[imp.from], &a.files[imp.to]);
        if from.top != to.top {
            let to_name = if to.top.is_empty() {
                "crate"
            } else {
                to.top.as_str()
            };
            *per.entry(from.top.as_str())
                .or_default()
                .entry(to_name)
                .or_default() += 1;
        }
    }
    for (from, targets) in &per {
        let allow = allowed(from).unwrap_or(&[]);
        let list: Vec<String> = targets
            .iter()
            .map(|(to, n)| {
                let bad = !allow.contains(&"*") && !allow.contains(to);
                format!("{to} {n}{}", if bad { " ✗" } else { "" })
            })
            .collect();
        let note = if allowed(from).is_none() {
            "  (not in the table)"
        } else {
            ""
        };
        let _ = writeln!(
            r,
            "{from:<12} -> {}{note}",
            if list.is_empty() {
                "-".into()
            } else {
                list.join(", ")
            }
        );
    }

    // Violations per rule.
    let _ = writeln!(r, "\n-- layer rules broken (import lines per rule) --");
    for problem in table_problems(a) {
        let _ = writeln!(r, "{problem}");
    }
    let breaks = layer_breaks(a);
    if breaks.is_empty() {
        let _ = writeln!(r, "none");
    }
    for (rule, lines) in &breaks {
        let _ = writeln!(r, "{:>4}  {rule}", lines.len());
    }

    // Circles.
    let _ = writeln!(r, "\n-- circles between top-level modules --");
    let modules = circles_between_modules(a);
    let _ = writeln!(r, "{}", or_none(&modules));
    let _ = writeln!(r, "\n-- circles between files --");
    let files = circles_between_files(a);
    let _ = writeln!(r, "{}", or_none(&files));

    // Largest files.
    let mut by_size: Vec<&Source> = a.files.iter().collect();
    by_size.sort_by(|x, y| y.lines.cmp(&x.lines).then(x.rel.cmp(&y.rel)));
    let over = by_size.iter().filter(|f| f.lines > MAX_LINES).count();
    let total: usize = a.files.iter().map(|f| f.lines).sum();
    let _ = writeln!(
        r,
        "\n-- largest files ({over} over {MAX_LINES} lines; {total} lines in src/) --"
    );
    for f in by_size.iter().take(15) {
        let mark = if f.lines > MAX_LINES { "  ✗" } else { "" };
        let _ = writeln!(r, "{:>6}  {}{mark}", f.lines, f.rel);
    }

    // Time.
    let _ = writeln!(
        r,
        "\n-- reading the time outside src/clock.rs (code only, comments and strings ignored) --"
    );
    let outside: Vec<&Source> = a.files.iter().filter(|f| f.rel != "src/clock.rs").collect();
    for (label, seq) in TIME_READINGS {
        let mut per_file: Vec<(usize, &str)> = outside
            .iter()
            .map(|f| (count_sequence(&f.tokens, seq), f.rel.as_str()))
            .filter(|(n, _)| *n > 0)
            .collect();
        per_file.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)));
        let n: usize = per_file.iter().map(|(n, _)| n).sum();
        let _ = writeln!(r, "{label:<24} {n:>4} in {:>2} files", per_file.len());
        if *label == "now_utc()" {
            let list: Vec<String> = per_file.iter().map(|(n, f)| format!("{f} {n}")).collect();
            let _ = writeln!(r, "    {}", list.join(", "));
        }
    }
    let _ = writeln!(r, "in tests/:");
    for (label, seq) in TIME_READINGS
        .iter()
        .filter(|(_, seq)| seq.last() == Some(&"sleep"))
    {
        let per_file: Vec<usize> = a
            .test_tokens
            .iter()
            .map(|t| count_sequence(t, seq))
            .collect();
        let n: usize = per_file.iter().sum();
        let files = per_file.iter().filter(|n| **n > 0).count();
        let _ = writeln!(r, "{label:<24} {n:>4} in {files:>2} files");
    }
    r
}

// ------------------------------------------------------------------------------------------
// The checker's own tests.

mod checker {
    use super::*;

    fn paths(src: &str) -> Vec<String> {
        module_paths(&tokenize(&strip(src)), "x::y")
            .into_iter()
            .map(|p| format!("{}:{}", p.line, p.absolute.join("::")))
            .collect()
    }

    #[test]
    fn a_simple_use_is_one_path() {
        assert_eq!(paths("use crate::outbox::Outbox;"), ["1:outbox::Outbox"]);
        assert_eq!(paths("pub use crate::store::{self as db};"), ["1:store"]);
    }

    #[test]
    fn grouped_and_nested_use_trees_give_one_path_per_leaf() {
        let src = "use crate::{a::{b, c as d, self}, e::*, f::{g::{h}}};\nuse crate::x::{\n    Y,\n    Z,\n};";
        assert_eq!(
            paths(src),
            [
                "1:a::b",
                "1:a::c",
                "1:a",
                "1:e",
                "1:f::g::h",
                "2:x::Y",
                "2:x::Z"
            ]
        );
    }

    #[test]
    fn inline_paths_are_read_up_to_generics_and_calls() {
        let src = "fn f() {\n    let c = crate::outbox::SystemClock::new();\n    let v = crate::a::B::<T>::c(crate::d::E { x: 1 });\n    crate::m!();\n}";
        assert_eq!(
            paths(src),
            ["2:outbox::SystemClock::new", "3:a::B", "3:d::E", "4:m"]
        );
    }

    #[test]
    fn super_and_self_count_from_the_module_they_are_in() {
        let src = "\
use super::a::B;
mod tests {
    use super::*;
    fn f() { super::super::c::D::new(); }
    mod deeper { use super::super::E; }
}
use self::e::{F, self};
fn g() -> super::H {}";
        let found: Vec<String> = module_paths(&tokenize(&strip(src)), "x::y")
            .into_iter()
            .map(|p| format!("{}:{}={}", p.line, p.written, p.absolute.join("::")))
            .collect();
        assert_eq!(
            found,
            [
                "1:super::a::B=x::a::B",
                "3:super=x::y",
                "4:super::super::c::D::new=x::c::D::new",
                "5:super::super::E=x::y::E",
                "7:self::e::F=x::y::e::F",
                "7:self::e=x::y::e",
                "8:super::H=x::H",
            ]
        );
        assert!(module_paths(&tokenize("use super::x;"), "").is_empty());
    }

    #[test]
    fn visibility_and_macro_crate_are_not_imports() {
        assert!(
            paths("pub(crate) fn f() {} pub(in crate::a) struct S; $crate::x::y!()").is_empty()
        );
    }

    #[test]
    fn comments_strings_and_chars_are_ignored() {
        let src = r#"// use crate::a;
/// crate::b in a doc comment
//! crate::c
/* crate::d /* nested crate::e */ still crate::f */
let s = "crate::g \" crate::h";
let b = b"crate::i";
let q = '"'; let e = '\''; let o = '{'; let u = '\u{7B}';
use crate::real::One;
"#;
        assert_eq!(paths(src), ["8:real::One"]);
    }

    #[test]
    fn raw_strings_are_ignored_and_raw_identifiers_are_read() {
        let src = r###"let a = r#"crate::a "quoted" crate::b"#;
let b = br##"crate::c "# crate::d"##;
let c = r"crate::e"; let d = cr"crate::f";
use crate::r#type::X;
let for_ = 1; let k = crate::k::K;"###;
        assert_eq!(paths(src), ["4:type::X", "5:k::K"]);
    }

    #[test]
    fn lifetimes_are_not_char_literals() {
        let src = "fn f<'a>(x: &'a str) -> crate::g::H<'a> { 'outer: loop { break 'outer; } }\nuse crate::i::J;";
        assert_eq!(paths(src), ["1:g::H", "2:i::J"]);
    }

    #[test]
    fn the_paths_of_one_line_are_shown_as_one_tree() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(compact(&set(&["crate::a::B"])), "crate::a::B");
        assert_eq!(
            compact(&set(&["crate::a", "super::b"])),
            "crate::a, super::b"
        );
        assert_eq!(
            compact(&set(&["crate::store", "crate::store::Store"])),
            "crate::store::{self, Store}"
        );
        assert_eq!(
            compact(&set(&["crate::a::b::C", "crate::a::D"])),
            "crate::a::{D, b::C}"
        );
    }

    #[test]
    fn files_map_to_module_paths() {
        assert_eq!(module_path(Path::new("lib.rs")), "");
        assert_eq!(module_path(Path::new("main.rs")), "main");
        assert_eq!(module_path(Path::new("clock.rs")), "clock");
        assert_eq!(module_path(Path::new("outbox/mod.rs")), "outbox");
        assert_eq!(
            module_path(Path::new("web/api/mailboxes.rs")),
            "web::api::mailboxes"
        );
        assert_eq!(
            module_path(Path::new("services/send/mod.rs")),
            "services::send"
        );
    }

    #[test]
    fn paths_resolve_to_the_longest_module_prefix() {
        let modules = ["", "outbox", "outbox::compose", "domain"];
        let find = |m: &str| modules.iter().position(|x| *x == m);
        let segs = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
        assert_eq!(resolve(&segs("outbox::compose::Draft::new"), find), Some(2));
        assert_eq!(resolve(&segs("outbox::Outbox"), find), Some(1));
        assert_eq!(resolve(&segs("Unknown"), find), Some(0));
    }

    #[test]
    fn circles_are_found_with_a_path_round_them() {
        // 0 → 1 → 2 → 0 and 3 ⇄ 4; 2 → 3 joins them one way only; 5 imports itself.
        let adj = vec![vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![5]];
        assert_eq!(circles(&adj), vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(shortest_cycle(&adj, &[0, 1, 2], 0), [0, 1, 2]);
        assert_eq!(shortest_cycle(&adj, &[3, 4], 3), [3, 4]);
        assert!(circles(&[vec![1], vec![2], vec![]]).is_empty());
    }

    #[test]
    fn a_bad_import_and_circles_are_reported_with_file_line_and_rule() {
        let a = read_sources(
            [
                (
                    "lib.rs",
                    "pub mod domain;\npub mod services;\npub mod gadgets;",
                ),
                (
                    "domain/mod.rs",
                    "pub mod mailbox;\npub mod message;\nuse crate::services::Deps;",
                ),
                ("domain/mailbox.rs", "use super::message::Limits;"),
                (
                    "domain/message.rs",
                    "pub struct Limits;\nfn f() -> super::mailbox::Provider {}",
                ),
                (
                    "services/mod.rs",
                    "use crate::domain::{mailbox::Mailbox, message};",
                ),
                ("gadgets.rs", "use crate::services::{self, Deps};"),
            ]
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
        );
        let problems = layer_violations(&a);
        for expected in [
            "module `gadgets` (src/gadgets.rs) is not in the layer table: add it to LAYERS in tests/architecture.rs",
            "domain may not import services (1):",
            "  src/domain/mod.rs:3  crate::services::Deps",
        ] {
            assert!(
                problems.iter().any(|p| p == expected),
                "{expected}\nnot in\n{problems:#?}"
            );
        }
        assert_eq!(
            circles_between_modules(&a),
            [
                "circle of 2 modules: domain, services",
                "  imports inside it that break the table: domain -> services",
                "  domain -> services  (src/domain/mod.rs:3 crate::services::Deps)",
                "  services -> domain  (src/services/mod.rs:1 crate::domain::mailbox::Mailbox)",
            ]
        );
        assert_eq!(
            circles_between_files(&a),
            [
                "circle of 2 files: src/domain/mailbox.rs, src/domain/message.rs",
                "  src/domain/mailbox.rs -> src/domain/message.rs  (src/domain/mailbox.rs:1 super::message::Limits)",
                "  src/domain/message.rs -> src/domain/mailbox.rs  (src/domain/message.rs:2 super::mailbox::Provider)",
            ]
        );
    }

    #[test]
    fn lib_doc_lines_are_matched_to_declarations() {
        let text = "//! - [`a`]: one;\n//! - [`b`] and [`c`]: two;\n//! - [`gone`]: old;\npub mod a;\npub mod b;\npub mod c;\n";
        let problems = lib_doc_problems(text, &tokenize(&strip(text)));
        assert_eq!(
            problems,
            [
                "  `c` is declared but has no `//! - [`c`]` line",
                "  `gone` is listed but not declared"
            ]
        );
    }

    #[test]
    fn the_table_rows_are_unique_and_name_each_other() {
        let names: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
        assert_eq!(names.len(), LAYERS.len());
        for (m, allow) in LAYERS {
            for a in *allow {
                assert!(*a == "*" || names.contains(a), "{m} allows unknown {a}");
                assert_ne!(a, m, "{m} lists itself");
            }
        }
    }
}
